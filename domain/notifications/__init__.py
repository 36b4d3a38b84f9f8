"""Notices to researchers about idle GPUs: pure rules, policies, recipients, messages and the outbox store.

The worker (worker/notifications/) decides and sends; the site (web/pages/notifications.py) shows
the outbox, policies and exemptions, and takes "still using it" answers.
"""
