"""Workloads: a pod using a GPU or MIG slice, from start to end, seen by alerts and by polls.

Two views of one thing:

* **alerts** (``GPUWorkloadStarted`` from the rules in ``alertmanager/``): firing opens a workload,
  resolved closes it; ``GPUXidError`` adds an event to the workloads on that GPU.
* **polls**: a pod label appearing on a GPU or slice opens a workload, its disappearing closes it,
  and every poll adds a usage sample (average and peak utilisation, peak memory, energy) and notes
  XID errors and thermal throttling as events.

Both address a workload by the same key (cluster, namespace, pod, GPU UUID, MIG instance), so the
views merge: whichever sees the workload first opens it, the other joins it. At most one workload
per key is open (a partial unique index), so a poll and a webhook racing to open one cannot both
succeed; the loser's transaction fails and is retried by its caller.

The parts: ``rules`` (keys and the alert merge, pure), ``samples`` (the poll view's rules, pure),
``sums`` (what one accounted window adds to the report-card sums, pure), ``store`` (SQL and the
advisory locks) and ``jobs`` (the entry points the receiver and the poll call). The area has no
scheduled job or route of its own.
"""
