"""Plain nn.Modules (no Lightning): generators, discriminators and per-method networks.

Importing this package registers every generator and discriminator by name.
"""

from i2ibench.nets import attention, bicyclegan, cut, densenet, dualgan, inception_blocks, patchgan, resnet, unet  # noqa: F401
