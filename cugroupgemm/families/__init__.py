"""Host halves of the kernel families; each shares its stem with a file in kernels_cu/."""
