"""The gallery: a static HTML site of a dataset, with an offline 3D viewer and a run report."""
