"""The auto-encoder family on scikit-learn's digits: denoising, VQ-VAE codebook use, anomaly detection vs PCA.

Run: ``python benchmarks/ae_results.py --json benchmarks/results/cpu-<date>-autoencoders.json
--plots benchmarks/results/autoencoders`` (a few minutes on 2 CPU cores). Every number comes from this run:
- denoising: the AE and the DAE (same architecture, same steps) rebuild held-out digits corrupted with the DAE's
  noise; the error is measured against the clean images;
- VQ-VAE: codebook perplexity and the fraction of codes used on held-out digits, with dead-code restart on
  and off (k-means initialisation off in the second, as the collapse case);
- anomaly detection, AUROC per digit and the mean, AE detector vs PCA with as many components as the AE has
  latent dimensions: one-class (train on one digit's training images; test on the held-out images of all
  digits, the other nine being anomalies) and leave-one-class-out (train on the nine other digits; the held-out
  digit is the anomaly).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch


def train(kind: str, images: np.ndarray, steps: int, seed: int = 0, **config):
    import sslfast.models as models
    from sslfast.data import ImageDataset
    from sslfast.train import PretrainConfig, Trainer
    cls = {"ae": "AutoEncoder", "dae": "DenoisingAutoEncoder", "vae": "VariationalAutoEncoder", "vqvae": "VQVAE"}
    torch.manual_seed(seed)
    model = getattr(models, cls[kind])(input_shape=images.shape[1:], **config)
    run = PretrainConfig(model=kind, out=None, max_steps=steps, global_batch_size=64, lr=2e-3, warmup=0.05,
                         schedule="cosine", eval_every=0, save_every=0, eval_fraction=0.0, progress=False, seed=seed,
                         weight_decay=0.0, prefetch=0)
    Trainer(run, model=model, data=ImageDataset(images)).train()
    return model.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800, help="training steps of each model")
    parser.add_argument("--detector-steps", type=int, default=400, help="training steps of each anomaly detector")
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plots", metavar="DIR")
    args = parser.parse_args(argv)

    import sslfast.data as D
    import sslfast.plots as plots
    from sslfast.anomaly import ReconstructionDetector
    from sslfast.models.autoencoders.denoising import corrupt
    from sslfast.models.autoencoders.vqvae import code_usage
    start = time.time()
    digits = D.digits()
    order = np.random.default_rng(0).permutation(len(digits))
    train_idx, test_idx = np.sort(order[:1437]), np.sort(order[1437:])
    x_train, x_test = digits.images[train_idx], digits.images[test_idx]
    y_train, y_test = digits.labels[train_idx], digits.labels[test_idx]
    test = torch.from_numpy(x_test)
    report = {"data": f"digits: {len(x_train)} training, {len(x_test)} held-out images (8×8)"}

    # denoising
    noise = dict(noise="masking", noise_level=0.5)
    ae = train("ae", x_train, args.steps, latent_dim=args.latent)
    dae = train("dae", x_train, args.steps, latent_dim=args.latent, **noise)
    noisy = corrupt(test, noise["noise"], noise["noise_level"], torch.Generator().manual_seed(1))
    with torch.no_grad():
        err = {name: float((m(pixel_values=noisy).reconstruction - test).square().mean())
               for name, m in (("ae", ae), ("dae", dae))}
        clean_err = {name: float((m(pixel_values=test).reconstruction - test).square().mean())
                     for name, m in (("ae", ae), ("dae", dae))}
    report["denoising"] = {"noise": noise, "mse_vs_clean_from_corrupted": err, "mse_on_clean_inputs": clean_err}
    print(f"denoising ({noise['noise']} {noise['noise_level']}): MSE to the clean image from corrupted inputs "
          f"AE {err['ae']:.4f}, DAE {err['dae']:.4f}; on clean inputs AE {clean_err['ae']:.4f}, DAE {clean_err['dae']:.4f}")

    # VQ-VAE codebook use
    report["vqvae"] = {}
    vq_models = {}
    for label, cfg in (("restart on", dict(dead_code_threshold=1.0, kmeans_init=True)),
                       ("restart off", dict(dead_code_threshold=0.0, kmeans_init=False))):
        vq = train("vqvae", x_train, args.steps, num_codes=64, code_dim=16, **cfg)
        idx = vq.encode_indices(test)
        perplexity, used = code_usage(idx, 64)
        with torch.no_grad():
            mse = float((vq(pixel_values=test).reconstruction - test).square().mean())
        report["vqvae"][label] = {"num_codes": 64, "perplexity": float(perplexity), "codes_used": float(used),
                                  "reconstruction_mse": mse, **cfg}
        vq_models[label] = (vq, idx)
        print(f"VQ-VAE, dead-code {label}: perplexity {float(perplexity):.1f} of 64, codes used {float(used):.2f}, "
              f"MSE {mse:.4f}")

    # anomaly detection
    detectors = {"ae": dict(model="ae", input_shape=(1, 8, 8), latent_dim=args.latent),
                 "pca": dict(model="pca", input_shape=(1, 8, 8), latent_dim=args.latent)}
    protocols = {}
    for protocol in ("one-class", "leave-one-class-out"):
        table = {name: [] for name in detectors}
        for digit in range(10):
            normal_train = x_train[y_train == digit] if protocol == "one-class" else x_train[y_train != digit]
            anomalous = (y_test != digit) if protocol == "one-class" else (y_test == digit)
            for name, kwargs in detectors.items():
                detector = ReconstructionDetector(**kwargs).fit(normal_train, steps=args.detector_steps)
                table[name].append(detector.evaluate(test, anomalous)["auroc"])
        protocols[protocol] = {name: {"per_digit_auroc": [round(a, 4) for a in aucs], "mean_auroc": float(np.mean(aucs))}
                               for name, aucs in table.items()}
        print(f"{protocol}: mean AUROC AE {np.mean(table['ae']):.3f}, PCA {np.mean(table['pca']):.3f}; per digit "
              f"AE {[round(a, 3) for a in table['ae']]}, PCA {[round(a, 3) for a in table['pca']]}")
    report["anomaly_detection"] = protocols
    report["seconds"] = round(time.time() - start, 1)

    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        with torch.no_grad():
            plots.image_grid([test[:12], noisy[:12], ae(pixel_values=noisy[:12]).reconstruction,
                              dae(pixel_values=noisy[:12]).reconstruction],
                             os.path.join(args.plots, "denoising.png"),
                             titles=["held-out digits", "corrupted (masking 50%)", "AE", "DAE"])
            plots.latent_map(ae.encode(test), y_test, os.path.join(args.plots, "ae-latents.png"),
                             title=f"AE latent codes of held-out digits ({args.latent}-d, first two PCs)")
        vae = train("vae", x_train, args.steps, latent_dim=args.latent, beta=1.0)
        plots.image_grid([vae.sample(12, generator=torch.Generator().manual_seed(0))],
                         os.path.join(args.plots, "vae-samples.png"), titles=["VAE samples from the prior"])
        for label, (vq, idx) in vq_models.items():
            plots.codebook_usage(idx, 64, os.path.join(args.plots, f"vqvae-codebook-{label.replace(' ', '-')}.png"),
                                 title=f"VQ-VAE, dead-code {label}")
        zero = ReconstructionDetector(**detectors["ae"]).fit(x_train[y_train == 0], steps=args.detector_steps)
        threshold = zero.calibrate(x_train[y_train == 0], target_fpr=0.05)
        scores = zero.score(test)
        plots.anomaly_scores(scores[y_test == 0], scores[y_test != 0], os.path.join(args.plots, "anomaly-digit0.png"),
                             threshold=threshold, title="AE trained on 0s: held-out 0s vs other digits")
    if args.json:
        from sslfast.bench.report import write_script_report
        write_script_report(args.json, "autoencoders", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
