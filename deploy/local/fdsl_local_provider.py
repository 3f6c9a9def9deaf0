"""Ray's fake multi-node provider, with the one change that lets a lost node be replaced.

The autoscaler's launcher tags every new node `uninitialized`; on a real cluster a node updater
then marks it `up-to-date`, but the fake provider runs without updaters (`disable_node_updaters`)
and keeps the launcher's tag. The autoscaler's liveness check (`terminate_unhealthy_nodes`) only
looks at `up-to-date` nodes, so a node whose raylet died mid-work (the drills SIGKILL one) stayed
listed forever as a pending `uninitialized` node: it counted as capacity on its way, and no
replacement was ever launched (seen in the local cluster drill, Ray 2.60). Here a node is
`up-to-date` once its raylet is started: a node without a heartbeat for AUTOSCALER_HEARTBEAT_TIMEOUT_S
is terminated and, if work waits, replaced, as on a cloud provider.

Loaded by the head's autoscaler as `provider: {type: external, module:
fdsl_local_provider.LocalFakeProvider}` (deploy/local/cluster.py puts this folder on PYTHONPATH).
"""

from __future__ import annotations

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import STATUS_UP_TO_DATE, TAG_RAY_NODE_STATUS


class LocalFakeProvider(FakeMultiNodeProvider):
    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        super()._create_node_with_resources_and_labels(
            node_config, {**tags, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE}, count, resources, labels)
