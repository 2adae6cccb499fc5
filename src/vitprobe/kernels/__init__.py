"""Device kernels for one backend each (imported only on that backend)."""
