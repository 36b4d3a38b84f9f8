"""GPU telemetry in the product's own terms, one shape for every reader.

* :mod:`domain.telemetry.readings`: what one poll of a source returns (:class:`Snapshot` of
  :class:`GpuReading`), the shape the sources, the simulator, the inventory, the ledger and the
  signal pipeline share;
* :mod:`domain.telemetry.labels`: how exporters and Prometheus setups name cluster, node and
  workload, the one precedence every reader of labels (sources, alert receiver, pipeline) applies;
* :mod:`domain.telemetry.dcgm`: what a dcgm-exporter reading means (utilisation rule, impossible
  values).
"""
