"""The auto-encoder family: AE, denoising AE, VAE and VQ-VAE, one configuration for all four."""
from sslfast.models.autoencoders.autoencoder import AutoEncoder, AutoEncoderBase
from sslfast.models.autoencoders.configuration import AutoEncoderConfig
from sslfast.models.autoencoders.denoising import DenoisingAutoEncoder
from sslfast.models.autoencoders.vae import VariationalAutoEncoder
from sslfast.models.autoencoders.vqvae import VQVAE

__all__ = ["AutoEncoderConfig", "AutoEncoderBase", "AutoEncoder", "DenoisingAutoEncoder", "VariationalAutoEncoder",
           "VQVAE"]
