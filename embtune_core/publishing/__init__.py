"""Publishing a result: the model archive, the hub upload, machine-independent exports, the deploy folder."""
