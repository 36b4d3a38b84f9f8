"""The worker's side of the signal pipeline (the pipeline itself is :mod:`domain.pipeline`).

``processor`` runs each poll and each webhook's alerts through the pipeline and saves the findings,
``rules`` holds its pure parts, ``store`` its SQL, ``metrics`` its ``/metrics`` families and ``jobs``
the LLM analysis job and replay input.
"""
