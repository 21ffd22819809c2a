"""Model zoo. Importing this package registers every family with the registry."""
from trainer.models.registry import (  # noqa: F401
    ModelSpec, UnknownModelError, ZooModel, create_model, get_spec, layer_shapes,
    list_models, register_model,
)
from trainer.models import classic, cnn, fast, resnet, transfer, vgg  # noqa: F401,E402
