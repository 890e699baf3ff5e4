"""OpenCL backend: device choice (device.py), the model's op set on device buffers (backend.py),
kernels in kernels.cl (OpenCL C 1.2, so PoCL runs them on CPUs)."""
