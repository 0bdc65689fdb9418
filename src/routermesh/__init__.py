"""router-mesh: a Kubernetes-native intent router for LLM tool fleets.

The distribution installs these import packages (the benchmarks, ``routermesh_bench`` from
bench/, come with a source checkout only):

- ``routermesh.runtime``: what runs inside the router pod;
  ``routermesh.runtime.contract.config`` is the config contract shared with the operator.
- ``routermesh.operator``: the kopf operator, its API
  types, builders and CRD generator. It may import ``routermesh.runtime.contract.config``;
  the runtime never imports the operator.
- ``routermesh.cli``: the ``router-mesh`` command, the composition root that
  may use both.
"""

__version__ = "0.1.0"

API_GROUP = "routermesh.io"
API_VERSION = "v1alpha1"
