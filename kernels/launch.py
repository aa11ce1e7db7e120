"""What every kernel file's launch table and ahead-of-time check share: typed tiles, the input precision a table
is keyed by, and the signature helpers of ``sslfast.aot``."""
import dataclasses
import enum

__all__ = ["Precision", "Tile", "INTERPRETED_TILE", "signature", "strides", "split_options"]


class Precision(str, enum.Enum):
    """The input precision a launch table is keyed by: 16-bit inputs run their dots on tensor cores, fp32
    inputs take exact (IEEE) products on FMA units, with smaller tiles."""
    HALF = "16"
    SINGLE = "32"

    @classmethod
    def of(cls, dtype: str) -> "Precision":
        """The precision of a dtype name ("bf16", "fp16", "fp32")."""
        return cls.SINGLE if dtype == "fp32" else cls.HALF


@dataclasses.dataclass(frozen=True)
class Tile:
    """One launch-table entry of a tiled kernel: its (BLOCK_M, BLOCK_N) tile, warps and pipeline stages."""
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int

    def launch(self) -> dict:
        """The launch keywords (constexprs and options) of the entry."""
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, num_warps=self.num_warps,
                    num_stages=self.num_stages)


INTERPRETED_TILE = Tile(16, 16, 1, 1)  # what the CPU interpreter runs quickly (tl.dot's minimum)


def signature(pointers: dict, ints: tuple = (), floats: tuple = ()) -> dict:
    """An AOT signature: the pointer arguments' types, then integer (i32: Triton passes ints below 2**31 so)
    and fp32 scalar arguments by name."""
    sig = dict(pointers)
    sig.update({name: "i32" for name in ints})
    sig.update({name: "fp32" for name in floats})
    return sig


def strides(*prefixes: str) -> tuple:
    """The (batch, token, head) stride argument names of each tensor prefix: stride_qb, stride_qt, stride_qh…"""
    return tuple(f"stride_{p}{axis}" for p in prefixes for axis in ("b", "t", "h"))


def split_options(launch: dict) -> tuple:
    """(constexprs, compile options) of a launch dict: ``num_warps`` and ``num_stages`` are options."""
    constexprs = dict(launch)
    options = {"num_warps": constexprs.pop("num_warps"), "num_stages": constexprs.pop("num_stages")}
    return constexprs, options
