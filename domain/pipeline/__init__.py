"""The signal pipeline: filter cheap, reason expensive.

Raw signals from polls and alerts (:mod:`~domain.pipeline.signals`, :mod:`~domain.pipeline.extract`)
pass cheap filters (:mod:`~domain.pipeline.filters`), are correlated into findings
(:mod:`~domain.pipeline.correlation`) by the :class:`~domain.pipeline.engine.Pipeline`, and the
findings are stored (:mod:`~domain.pipeline.findings`). Inference (:mod:`~domain.pipeline.inference`)
finds stragglers among peers, totals idle-allocated waste and ranks nodes for placement; an optional
LLM (:mod:`~domain.pipeline.llm`) explains escalated findings. :mod:`~domain.pipeline.replay` runs
recorded inputs through other settings without touching live findings.

The package is pure where it can be: the engine, filters, correlation and inference hold no
database session, clock or network connection, so the worker, the site, the CLI and the
benchmark all run the same code.

Exceptions::

    PipelineError
     ├── ReplayError          no recorded input, or an override that is not a setting
     └── LlmError             the analysis endpoint failed (llm.py)
          ├── LlmUnavailable   connection, timeout, 5xx or an answer that is not chat-completions JSON
          └── LlmBudgetExceeded the rate or the daily budget leaves no room for a request now
"""


class PipelineError(Exception):
    """Base of the pipeline's own errors."""
