"""Report cards (issue 17): per workload and per project-month, from time-weighted workload sums.

``usage`` (what a card is built from), ``rules`` (grade and advice notes), ``rightsizing``,
``cards`` (assembling a card), ``queries`` (reading workloads from the database).
"""
