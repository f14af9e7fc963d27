"""GPU placement: each engine's memory share follows its deployment's ``num_gpus``.

``config`` holds the pydantic models ``app.config`` embeds (so it imports nothing
else of the app); ``shares`` derives each engine's memory setting, ``packing`` plans
deployments onto GPUs, ``apply`` puts a share into a model's load.
"""
