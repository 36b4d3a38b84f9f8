"""Notices about idle GPUs: the jobs that decide and send them, and the channels they go through."""
