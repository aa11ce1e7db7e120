"""The auto-encoders' family records, one per ``--model`` (ae, dae, vae, vqvae): one configuration and sizes,
the reconstruction objective."""
from sslfast.models._common.family import Family
from sslfast.models.autoencoders.autoencoder import AutoEncoder
from sslfast.models.autoencoders.configuration import AutoEncoderConfig
from sslfast.models.autoencoders.denoising import DenoisingAutoEncoder
from sslfast.models.autoencoders.vae import VariationalAutoEncoder
from sslfast.models.autoencoders.vqvae import VQVAE

__all__ = ["AUTOENCODERS", "AUTOENCODER_SIZES"]

AUTOENCODER_SIZES = {
    "tiny": dict(latent_dim=4, hidden_sizes=(64,), channels=(16, 32), num_codes=32, code_dim=8),
    "mini": dict(latent_dim=8, hidden_sizes=(256, 128), channels=(32, 64), num_codes=64, code_dim=16),
    "small": dict(latent_dim=16, hidden_sizes=(512, 256), channels=(64, 128), num_codes=256, code_dim=32),
    "base": dict(latent_dim=32, hidden_sizes=(1024, 512), channels=(128, 256), num_codes=512, code_dim=64),
}

AUTOENCODERS = tuple(
    Family(name=name, display_name=display, config_class=AutoEncoderConfig, objectives={"reconstruction": cls},
           sizes=AUTOENCODER_SIZES, task="autoencoder")
    for name, display, cls in (("ae", "auto-encoder", AutoEncoder), ("dae", "denoising auto-encoder",
                                                                      DenoisingAutoEncoder),
                               ("vae", "variational auto-encoder", VariationalAutoEncoder),
                               ("vqvae", "VQ-VAE", VQVAE)))
