"""What the operator and the router pod agree on, and nothing else: the config the
operator renders into the ConfigMap (``config``), the model set the download Job fetches
(``models``) and the report a pod gives on ``/readyz`` (``readiness``).

Pure data and validation: the operator's builders import this package, never the
runtime's I/O modules (downloader, servers, layers)."""
