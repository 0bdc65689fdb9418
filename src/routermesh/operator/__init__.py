"""The kopf operator: the API types, the CRD generator, the pure builders of every object a
RouterMesh owns, reconcile, status conditions and the handlers ``router-mesh operator`` runs."""
