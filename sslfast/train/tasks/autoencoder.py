"""Auto-encoder training: AE, denoising AE, VAE and VQ-VAE on images or vectors (digits by default)."""
from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
import torch

import sslfast.data as D
from sslfast.data.mnist import fashion_mnist, mnist_5k
from sslfast.models.autoencoders import AutoEncoderConfig
from sslfast.models.autoencoders.vqvae import code_usage
from sslfast.models.families import family
from sslfast.train.config import ConfigError, read_mapping
from sslfast.train.tasks.base import Task, unwrap

__all__ = ["AutoEncoderTask", "load_image_data"]


def load_image_data(data: str) -> D.ImageDataset:
    """``default`` / ``digits`` → scikit-learn's digits; ``mnist`` → MNIST-5k; ``fashion-mnist`` → its train
    split; else a .npy / .npz file or an image folder."""
    if data in ("default", "digits"):
        return D.digits()
    if data == "mnist":
        return mnist_5k()
    if data == "fashion-mnist":
        return fashion_mnist("train")
    return D.load_images(data)


class AutoEncoderTask(Task):
    name = "autoencoder"

    def prepare(self, out_dir, resume_path) -> None:
        cfg = self.config
        data = self.given_data if self.given_data is not None else load_image_data(cfg.data)
        if not isinstance(data, D.ImageDataset):
            data = D.load_images(data)
        order = np.random.default_rng(cfg.seed).permutation(len(data))
        n_eval = int(round(cfg.eval_fraction * len(data))) if len(data) > 1 else 0
        self.train_dataset = data.subset(np.sort(order[n_eval:]))
        self.eval_dataset = data.subset(np.sort(order[:n_eval])) if n_eval else None
        self.collate = D.ImageCollator()
        self.model_config = self._model_config(data.sample_shape)
        digest = hashlib.sha256(np.ascontiguousarray(data.images).tobytes()).hexdigest()
        self.fingerprint = {"data_sha256": digest, "model_config": self.model_config.to_dict()}

    def _model_config(self, shape):
        cfg = self.config
        if cfg.model_config:
            config = AutoEncoderConfig.from_dict(read_mapping(cfg.model_config))
            if tuple(config.input_shape) != tuple(shape):
                raise ConfigError(f"the model config's input_shape {tuple(config.input_shape)} does not match the "
                                  f"data's {tuple(shape)}")
            return config
        return AutoEncoderConfig(input_shape=shape, **family(cfg.model).sizes[cfg.size])

    def build_model(self):
        return family(self.config.model).objectives[self.config.objective](self.model_config)

    def mean_example_tokens(self) -> float:
        return 1.0  # throughput and --max-tokens count samples

    def counts(self, batch):
        return {"tokens": int(batch["pixel_values"].shape[0])}

    def loss(self, model, batch, totals, world_size):
        return model(pixel_values=batch["pixel_values"]).loss / totals["micro_batches"]

    @torch.no_grad()
    def evaluate(self, model, batches):
        """Held-out reconstruction error (MSE per element), VAE KL, VQ-VAE codebook perplexity and use."""
        model = unwrap(model)
        sums = torch.zeros(3, dtype=torch.float64)  # squared error, elements, KL sum
        indices = []
        for batch in batches:
            weight = batch.get("eval_weight", 1.0)
            x = batch["pixel_values"].to(self.ctx.device)
            out = model(pixel_values=x)
            sums[0] += weight * (out.reconstruction.double() - x.double()).square().sum().cpu()
            sums[1] += weight * x.numel()
            if out.kl is not None:
                sums[2] += weight * out.kl.double().cpu() * x.shape[0]
            if out.indices is not None and weight:
                indices.append(out.indices.reshape(-1))
        sums = self.ctx.all_reduce_sum(sums)
        if sums[1] == 0:
            return {}
        result = {"eval_reconstruction_mse": float(sums[0] / sums[1])}
        if self.config.model == "vae":
            result["eval_kl"] = float(sums[2] / (sums[1] / np.prod(self.model_config.input_shape)))
        if indices:
            perplexity, used = code_usage(torch.cat(indices), self.model_config.num_codes)
            result.update(eval_perplexity=float(perplexity), eval_codes_used=float(used))
        return result

    def save_final(self, model, directory):
        unwrap(model).save_pretrained(directory)

    def flops_per_token(self, model) -> Optional[float]:
        return None
