"""The GPU-hours ledger (docs/ledger.md): rate card and statements on the read side."""
