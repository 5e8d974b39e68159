"""The sections of a finetune spec: every parameter of the seeds' systems, once.

Primary names are the Azure ML component inputs (seeds 000-002); llama-recipes (003) and
Anyscale (004) names are accepted as aliases. Defaults are those of seed 001; `task_defaults`
hold where another task differs. Leaf names are unique across sections (a test checks it), so a
parameter can also be named by its leaf alone (`--set learning_rate=1e-4`, runtime `--key value`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from ftc.spec.fields import Flag, Section, as_text, param

TRAIN = "Training parameters"
LORA = "Lora parameters"
EARLY = "Early Stopping Parameters"
DEEPSPEED = "Deepspeed Parameters"
ORT = "ONNX Runtime Parameters"
MLFLOW = "MLFlow Parameters"
INPUTS = "Data and Model inputs"

LLM_TASKS = ("causal_lm",)
SEQ2SEQ_TASKS = ("translation", "summarization")

METRICS: dict[str, list[str]] = {
    "text_classification": ["loss", "f1_macro", "mcc", "accuracy", "precision_macro", "recall_macro"],
    "question_answering": ["loss", "f1", "exact"],
    "translation": ["loss", "bleu"],
    "summarization": ["loss", "rouge1", "rouge2", "rougeL", "rougeLsum"],
    "causal_lm": ["loss", "perplexity"],
}
ALL_METRICS = tuple(dict.fromkeys(m for ms in METRICS.values() for m in ms))
# Metrics where lower is better (TrainingArguments.greater_is_better false); the others are higher-is-better.
LOWER_IS_BETTER = ("loss", "perplexity")
Metric = Literal[ALL_METRICS]  # type: ignore[valid-type]

Precision = Annotated[
    Literal["32", "16", "bf16", "fp16", "auto"],
    BeforeValidator(as_text),
    WithJsonSchema({"enum": ["32", "16", "bf16", "fp16", "auto", 32, 16]}),
]
# causal_lm's max_seq_length default: the model's maximum, capped here (a packed row is this many tokens).
LLM_MAX_SEQ_LENGTH = 4096
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, BeforeValidator(lambda v: str(v).lower() if isinstance(v, bool) else as_text(v))]
DeepSpeedStage = Annotated[Literal["2", "3"], BeforeValidator(as_text), WithJsonSchema({"enum": ["2", "3", 2, 3]})]


def _flag_or_path(value: Any) -> Any:
    """true/false (YAML or the Azure ML text "true"/"false", any case), or other text: a path."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return text.lower() == "true" if text.lower() in ("true", "false") else text
    raise ValueError("expected true, false or the path of a checkpoint folder")


FlagOrPath = Annotated[
    bool | str,
    BeforeValidator(_flag_or_path),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "string", "minLength": 1}]}),
]


class ModelSection(Section):
    """The pretrained model to start from."""

    model_selector_output: str = param(
        description=(
            "The model to finetune: a local folder with config, weights and tokenizer (the Azure ML "
            "model selector output), an MLflow-format model folder (a file MLmodel at its top: Azure ML "
            "registry models, ftc's mlflow_model_folder output), a storage URI (s3://, gs://, abfs://, az://; "
            "credentials from env.secrets), or a Hugging Face hub id where a network is reachable. On ray a "
            "local folder must be an absolute path every node sees: models never travel with a Ray job."
        ),
        name="model_selector_output",
        aliases=("path", "model_name", "model_id", "model_name_or_path", "pytorch_model_path", "huggingface_id"),
        group=INPUTS,
        aml_type="uri_folder",
        aml_optional=False,
        min_length=1,
    )
    tokenizer_name: str | None = param(
        None,
        "Tokenizer folder, storage URI or hub id when it differs from the model's (llama-recipes tokenizer_name).",
    )
    gguf_file: str | None = param(
        None, "File name of a GGUF model inside the model folder; loaded and dequantized by transformers."
    )
    ignore_mismatched_sizes: Flag = param(
        True,
        "Not setting this flag will raise an error if some of the weights from the checkpoint do not have "
        "the same size as the weights of the model.",
        group=TRAIN,
    )


class DataSection(Section):
    """Training and validation data, and how its columns map to the task."""

    preprocess_output: str | None = param(
        None,
        "A folder holding train.*, validation.* and test.* files (JSON Lines, CSV or Parquet), as the "
        "Azure ML preprocess output does. train_file_path, validation_file_path and test_file_path take precedence.",
        group=INPUTS,
        aml_type="uri_folder",
        aml_optional=False,
    )
    train_file_path: str | None = param(
        None,
        "Training data file (.jsonl, .json, .csv or .parquet).",
        name="train_file_path",
        aliases=("train_file", "train_path", "train"),
        aml_type="uri_file",
    )
    validation_file_path: str | None = param(
        None,
        "Validation data file. When none is given, a seeded split of the training data is used.",
        name="validation_file_path",
        aliases=("validation_file", "valid_path", "validation"),
        aml_type="uri_file",
    )
    test_file_path: str | None = param(
        None, "Test data file.", name="test_file_path", aliases=("test_file", "test"), aml_type="uri_file"
    )
    validation_split_ratio: float = param(
        0.1, "Fraction of the training data held out for validation when no validation data is given.", gt=0, lt=1
    )
    sentence1_key: str = param(
        "text", "Column holding the (first) input text.", tasks=("text_classification",)
    )
    sentence2_key: str | None = param(
        None, "Column holding the second text of a sentence pair.", tasks=("text_classification",)
    )
    label_key: str = param("label", "Column holding the label.", tasks=("text_classification",))
    question_key: str = param("question", "Column holding the question.", tasks=("question_answering",))
    context_key: str = param("context", "Column holding the context passage.", tasks=("question_answering",))
    answers_key: str = param(
        "answers", "Column holding the answers ({text: [...], answer_start: [...]}).", tasks=("question_answering",)
    )
    answer_start_key: str = param(
        "answer_start", "Key of the answer start offsets inside the answers column.", tasks=("question_answering",)
    )
    answer_text_key: str = param(
        "text", "Key of the answer texts inside the answers column.", tasks=("question_answering",)
    )
    doc_stride: int = param(
        128, "Overlap in tokens between the chunks of a long context.", ge=0, tasks=("question_answering",)
    )
    n_best_size: int = param(
        20, "Number of start/end candidates considered when extracting an answer.", ge=1, tasks=("question_answering",)
    )
    max_answer_length_in_tokens: int = param(
        30, "Longest answer, in tokens, that can be extracted.", ge=1, tasks=("question_answering",)
    )
    source_key: str = param("source", "Column holding the source text.", tasks=SEQ2SEQ_TASKS)
    target_key: str = param("target", "Column holding the target text.", tasks=SEQ2SEQ_TASKS)
    source_lang: str | None = param(
        None, "Source language code, for models that need one (mBART: en_XX).", tasks=("translation",)
    )
    target_lang: str | None = param(
        None, "Target language code, for models that need one (mBART: ro_RO).", tasks=("translation",)
    )
    text_key: str = param("text", "Column holding plain training text.", tasks=LLM_TASKS)
    messages_key: str = param(
        "messages", "Column holding chat messages ([{role, content}, ...]).", tasks=LLM_TASKS
    )
    max_seq_length: int = param(
        -1,
        "Longest tokenized sequence; longer ones are truncated. -1 uses the tokenizer's maximum. causal_lm "
        f"defaults to {LLM_MAX_SEQ_LENGTH} (or the model's maximum when smaller): each packed row is that long.",
        name="max_seq_length",
        aliases=("context_length",),
        task_defaults={"causal_lm": LLM_MAX_SEQ_LENGTH},
        ge=-1,
    )
    pad_to_max_length: Flag = param(
        False, "Pad every sequence to max_seq_length instead of to the longest in the batch."
    )
    batching_strategy: Literal["packing", "padding"] = param(
        "padding",
        "packing concatenates samples into full context-length rows; padding pads each batch.",
        task_defaults={"causal_lm": "packing"},
        tasks=LLM_TASKS,
    )
    preprocess_batch_size: int = param(
        1000, "Number of samples tokenized at a time.", name="preprocess_batch_size", aliases=("batch_size",), ge=1
    )
    preprocessing_num_workers: int | None = param(
        None,
        "Processes that tokenize the data (datasets' map num_proc); unset or 1 tokenizes in the training process. "
        "The result is cached by fingerprint in the datasets cache (HF_DATASETS_CACHE), so a rerun skips it; "
        "each node's first process tokenizes and the others read the cache.",
        name="preprocessing_num_workers",
        ge=1,
    )
    streaming: Flag = param(
        False,
        "Read the training data as a stream (datasets' IterableDataset) instead of preparing it on disk first, "
        "for data larger than the disk; needs training.max_steps (a stream has no length). causal_lm only.",
        tasks=LLM_TASKS,
    )


class LoraSection(Section):
    """Parameter-efficient finetuning (LoRA and the other PEFT methods of llama-recipes)."""

    apply_lora: Flag = param(
        False, "If true, enables LoRA.", name="apply_lora", aliases=("use_peft",), group=LORA
    )
    merge_lora_weights: Flag = param(
        True,
        "If true, the LoRA weights are merged into the base model before saving; otherwise only the adapter is saved.",
        group=LORA,
    )
    lora_alpha: int = param(
        128,
        "LoRA scaling parameter alpha.",
        name="lora_alpha",
        aliases=("alpha",),
        group=LORA,
        task_defaults={"causal_lm": 32},
        ge=1,
    )
    lora_r: int = param(8, "LoRA rank (dimension).", name="lora_r", aliases=("r",), group=LORA, ge=1)
    lora_dropout: float = param(
        0.0, "LoRA dropout value.", group=LORA, task_defaults={"causal_lm": 0.05}, ge=0, lt=1
    )
    target_modules: list[str] | None = param(
        None, "Module names LoRA adapts; empty picks the default of the model family (e.g. query/value for BERT)."
    )
    modules_to_save: list[str] = param(
        description="Modules trained in full and saved next to the adapter (e.g. a classifier head).",
        default_factory=list,
    )
    bias: Literal["none", "all", "lora_only"] = param("none", "Which biases LoRA trains.")
    fan_in_fan_out: Flag = param(False, "Set for layers that store weights as (fan_in, fan_out), like GPT-2's Conv1D.")
    init_lora_weights: Flag = param(True, "Initialise LoRA weights so the adapter starts as an identity.")
    peft_method: Literal["lora", "llama_adapter", "prefix"] = param(
        "lora", "PEFT method when apply_lora is true (llama-recipes peft_method)."
    )
    adapter_len: int = param(10, "Adapter length for peft_method llama_adapter.", ge=1)
    adapter_layers: int = param(30, "Adapted layers for peft_method llama_adapter.", ge=1)
    num_virtual_tokens: int = param(30, "Virtual tokens for peft_method prefix.", ge=1)
    from_peft_checkpoint: str | None = param(
        None,
        "Adapter folder to start from instead of fresh LoRA weights.",
        name="from_peft_checkpoint",
        aliases=("initial_adapter_model_ckpt_path",),
    )


class TrainingSection(Section):
    """Length of training, batching and reproducibility."""

    num_train_epochs: int = param(
        1,
        "Number of epochs to run for finetune.",
        name="num_train_epochs",
        aliases=("num_epochs",),
        group=TRAIN,
        task_defaults={"causal_lm": 3},
        ge=1,
    )
    max_steps: int = param(
        -1,
        "If set to a positive number, the total number of training steps to perform. Overrides "
        "num_train_epochs. -1 or 0 means no limit.",
        name="max_steps",
        aliases=("max_train_step",),
        group=TRAIN,
        ge=-1,
    )
    min_update_steps: int | None = param(
        None,
        "When num_train_epochs is not given, train for ceil(min_update_steps / steps_per_epoch) epochs (Anyscale).",
        ge=1,
    )
    per_device_train_batch_size: int = param(
        1,
        "Per device batch size used for training. The effective batch size is per_device_train_batch_size x "
        "processes_per_node x nodes x gradient_accumulation_steps.",
        name="per_device_train_batch_size",
        aliases=("batch_size_training", "train_batch_size_per_device"),
        group=TRAIN,
        task_defaults={"causal_lm": 4},
        ge=1,
    )
    per_device_eval_batch_size: int = param(
        1,
        "Per device batch size used for validation. causal_lm defaults to per_device_train_batch_size.",
        name="per_device_eval_batch_size",
        aliases=("val_batch_size", "eval_batch_size_per_device"),
        group=TRAIN,
        ge=1,
    )
    auto_find_batch_size: Flag = param(
        False,
        "If true and per_device_train_batch_size runs out of memory, the batch size is halved until it fits.",
        group=TRAIN,
    )
    gradient_accumulation_steps: int = param(
        1,
        "Number of updates steps to accumulate the gradients for, before performing a backward/update pass.",
        group=TRAIN,
        ge=1,
    )
    seed: int = param(42, "Random seed that will be set at the beginning of training.", group=TRAIN, ge=0)
    enable_full_determinism: Flag = param(
        False, "Ensure reproducible behavior during distributed training (deterministic algorithms).", group=TRAIN
    )
    dataloader_num_workers: int = param(
        0,
        "Number of subprocesses to use for data loading. 0 means that the data will be loaded in the main process.",
        name="dataloader_num_workers",
        aliases=("num_workers_dataloader",),
        group=TRAIN,
        ge=0,
    )
    max_grad_norm: float = param(
        1.0,
        "Maximum gradient norm (for gradient clipping).",
        name="max_grad_norm",
        aliases=("gradient_clipping_threshold",),
        group=TRAIN,
        ge=0,
    )
    gradient_clipping: Flag = param(True, "Clip gradients to max_grad_norm (llama-recipes gradient_clipping).")
    freeze_layers: Flag = param(False, "Freeze the first num_freeze_layers transformer layers.")
    num_freeze_layers: int = param(1, "Number of layers frozen when freeze_layers is true.", ge=0)


class OptimizerSection(Section):
    """Optimizer and learning-rate schedule."""

    optim: Literal["adamw_hf", "adamw_torch", "adafactor", "adamw_torch_fused", "sgd"] = param(
        "adamw_hf",
        "Optimizer to be used while training. adamw_hf is an alias of adamw_torch: transformers 5 removed it. "
        "causal_lm defaults to adamw_torch, adamw_torch_fused on CUDA GPUs.",
        group=TRAIN,
        task_defaults={"causal_lm": "adamw_torch"},
    )
    learning_rate: float = param(
        2e-05,
        "Start learning rate used for training.",
        name="learning_rate",
        aliases=("lr",),
        group=TRAIN,
        task_defaults={"causal_lm": 1e-4},
        gt=0,
    )
    warmup_steps: int = param(
        0,
        "Number of steps for the learning rate scheduler warmup phase.",
        name="warmup_steps",
        aliases=("num_warmup_steps",),
        group=TRAIN,
        ge=0,
    )
    weight_decay: float = param(
        0.0,
        "Weight decay to apply (if not zero) to all layers except all bias and LayerNorm weights in AdamW optimizer.",
        group=TRAIN,
        ge=0,
    )
    adam_beta1: float = param(0.9, "beta1 hyperparameter for the AdamW optimizer.", group=TRAIN, ge=0, lt=1)
    adam_beta2: float = param(0.999, "beta2 hyperparameter for the AdamW optimizer.", group=TRAIN, ge=0, lt=1)
    adam_epsilon: float = param(1e-08, "epsilon hyperparameter for the AdamW optimizer.", group=TRAIN, gt=0)
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "step"
    ] = param(
        "linear",
        "Learning rate scheduler to use. step decays by gamma every epoch (llama-recipes StepLR).",
        group=TRAIN,
    )
    gamma: float = param(0.85, "Per-epoch decay factor of lr_scheduler_type step.", gt=0, le=1)


class EvaluationSection(Section):
    """When and how the model is evaluated, and how the best one is chosen."""

    evaluation_strategy: Literal["epoch", "steps", "no"] = param(
        "epoch",
        "The evaluation strategy to adopt during training. If set to steps, evaluation happens every "
        "eval_steps steps, or every evaluation_steps_interval of an epoch.",
        group=TRAIN,
    )
    evaluation_steps_interval: float = param(
        0.0,
        "The evaluation steps in fraction of an epoch steps to adopt during training. Overwrites eval_steps if not 0.",
        group=TRAIN,
        ge=0,
        le=1,
    )
    eval_steps: int = param(
        500, "Number of update steps between two evals if evaluation_strategy='steps'.", group=TRAIN, ge=1
    )
    eval_accumulation_steps: int | None = param(
        None,
        "Number of predictions steps to accumulate before moving the tensors to the CPU.",
        group=TRAIN,
        task_defaults={"question_answering": 1},
        ge=-1,
    )
    max_eval_steps: int = param(
        0,
        "If positive, evaluate on at most this many batches (llama-recipes max_eval_step). 0 means all.",
        name="max_eval_steps",
        aliases=("max_eval_step",),
        ge=0,
    )
    run_validation: Flag = param(True, "Evaluate during training; false is the same as evaluation_strategy no.")
    metric_for_best_model: Metric = param(  # type: ignore[valid-type]
        "loss",
        "Metric to use to compare two different model checkpoints; the best one is kept as the final model.",
        group=TRAIN,
        task_enum=METRICS,
    )


class EarlyStoppingSection(Section):
    """Stop when the metric for the best model stops improving."""

    apply_early_stopping: Flag = param(False, "If true, early stopping is enabled.", group=EARLY)
    early_stopping_patience: int = param(
        1,
        "Stop training when metric_for_best_model worsens for early_stopping_patience evaluation calls.",
        group=EARLY,
        ge=1,
    )
    early_stopping_threshold: float = param(
        0.0, "Denotes how much the specified metric must improve to satisfy early stopping conditions.", group=EARLY, ge=0
    )


class CheckpointingSection(Section):
    """Where outputs go and which checkpoints are kept."""

    output_dir: str = param(
        "outputs",
        "Folder for pytorch_model_folder, metrics.json and logs, relative to the spec file. `ftc run --output` "
        "and the launchers' --output_dir override it. With several nodes, a folder every node sees (a shared file "
        "system) or a remote URI: lint warns about a node-local one (FTC166).",
    )
    resume_from_checkpoint: FlagOrPath = param(
        False,
        "If true, resumes the training from last saved checkpoint. Along with loading the saved weights, saved "
        "optimizer, scheduler and random states will be loaded if exist. A checkpoint folder (checkpoint-<step>) "
        "instead of true resumes from that checkpoint; a remote one (s3://, gs://, abfs://, ...) is downloaded first, "
        "once per node. A checkpoint trained with other values (learning rate, "
        "max_steps, data, ...) is refused unless resume_ignore_config_change is true.",
        group=TRAIN,
    )
    resume_ignore_config_change: Flag = param(
        False,
        "If set to true, resumes from a checkpoint that was trained with other values than this run's (for "
        "example a longer max_steps), with a warning that lists them. A checkpoint at or past max_steps is refused even then.",
    )
    save_total_limit: int = param(
        -1,
        "If a positive value is passed, it will limit the total number of checkpoints saved. The value of -1 "
        "saves all the checkpoints, otherwise the older checkpoints get deleted.",
        name="save_total_limit",
        aliases=("num_checkpoints_to_keep",),
        group=TRAIN,
        ge=-1,
    )
    checkpoint_every_n_epochs: int | None = param(
        None, "Validate and checkpoint every n epochs (Anyscale); overrides the evaluation strategy.", ge=1
    )
    max_num_checkpoints: int | None = param(
        None,
        "Number of validation + checkpoint events spread over the run when checkpoint_every_n_epochs is not set (Anyscale).",
        ge=1,
    )
    save_model: Flag = param(True, "Save the final model (llama-recipes save_model).")
    save_as_mlflow_model: Flag = param(
        True, "If set to true, will save as mlflow model with pyfunc as flavour.", group=MLFLOW
    )


class DeepSpeedSection(Section):
    """DeepSpeed ZeRO."""

    apply_deepspeed: Flag = param(False, "If set to true, will enable deepspeed for training.", group=DEEPSPEED)
    deepspeed: str | None = param(
        None,
        "Deepspeed config to be used for finetuning. Without one, ftc writes a default ZeRO config for deepspeed_stage.",
        name="deepspeed",
        aliases=("config_path",),
        group=DEEPSPEED,
        aml_type="uri_file",
    )
    deepspeed_stage: DeepSpeedStage = param("2", "ZeRO stage of the default config when no file is given.")
    offload_optimizer: Flag = param(False, "ZeRO: keep optimizer states in CPU memory (default config only).")
    offload_param: Flag = param(False, "ZeRO-3: keep parameters in CPU memory (default config only).")


class FsdpSection(Section):
    """Fully Sharded Data Parallel (llama-recipes fsdp_config)."""

    enable_fsdp: Flag = param(False, "Shard the model with FSDP.")
    low_cpu_fsdp: Flag = param(False, "Load the pretrained weights on rank 0 only, to save CPU memory.")
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"] = param(
        "FULL_SHARD", "What FSDP shards: parameters, gradients and optimizer states, or fewer."
    )
    hsdp: Flag = param(
        False,
        "Hybrid sharding (with sharding_strategy HYBRID_SHARD): shard within each node, replicate across nodes. "
        "Only the node layout is supported: other group sizes are refused.",
    )
    sharding_group_size: int = param(
        0, "Ranks per sharding group with hsdp: 0 or resources.processes_per_node.", ge=0
    )
    replica_group_size: int = param(0, "Number of replica groups with hsdp: 0 or resources.nodes.", ge=0)
    checkpoint_type: Literal["SHARDED_STATE_DICT", "FULL_STATE_DICT"] = param(
        "SHARDED_STATE_DICT", "Save one checkpoint per rank (sharded) or one gathered on rank 0 (full)."
    )
    fsdp_activation_checkpointing: Flag = param(True, "Activation checkpointing of the FSDP-wrapped layers.")
    fsdp_cpu_offload: Flag = param(False, "Offload FSDP parameters to CPU.")
    fsdp_optimizer: Literal["AdamW", "anyprecision"] = param(
        "AdamW", "llama-recipes FSDP optimizer; anyprecision needs pure_bf16.", name="fsdp_optimizer", aliases=("optimizer",)
    )
    save_optimizer: Flag = param(False, "Save the optimizer state with FSDP checkpoints.")
    dist_checkpoint_root_folder: str | None = param(None, "Root folder of FSDP checkpoints (default: output_dir).")
    dist_checkpoint_folder: str = param("fine-tuned", "Sub-folder of FSDP checkpoints.")


class OrtSection(Section):
    """ONNX Runtime training (kept for compatibility: it cannot run with transformers 5)."""

    apply_ort: Flag = param(
        False,
        "If set to true, will use the ONNXRunTime training. Unavailable: ORTTrainer does not import with "
        "transformers 5 and torch 2.13, so lint reports true as an error.",
        group=ORT,
    )


class PrecisionSection(Section):
    """Numeric precision, quantization and kernels."""

    precision: Precision = param(
        "auto",
        "Apply mixed precision training. auto: bf16 on GPUs that support it, fp16 on older GPUs, 32-bit on CPU "
        "(decided at run time and logged). 16 uses bf16 where supported, else fp16; bf16 and fp16 force one.",
        group=TRAIN,
    )
    use_fp16: Flag = param(False, "llama-recipes: fp16 mixed precision; same as precision fp16.")
    mixed_precision: Flag | None = param(None, "llama-recipes: bf16 mixed precision; same as precision bf16.")
    pure_bf16: Flag = param(False, "Keep the model weights themselves in bf16 (llama-recipes).")
    quantization: Literal["4bit", "8bit"] | None = param(
        None, "Load the base model quantized with bitsandbytes (QLoRA); forces apply_lora."
    )
    use_fast_kernels: Flag = param(
        False,
        "Use fused attention kernels (SDPA, flash attention where installed).",
        name="use_fast_kernels",
        aliases=("flash_attention_2",),
    )
    gradient_checkpointing: Flag = param(False, "Recompute activations in the backward pass to save memory.")
    torch_compile: Flag = param(False, "Compile the model with torch.compile.")


class WandbSection(Section):
    """Weights & Biases run settings (llama-recipes wandb_config)."""

    project: str = param("ftc", "W&B project.")
    entity: str | None = param(None, "W&B entity (user or team).")
    job_type: str | None = param(None, "W&B job type.")
    tags: list[str] | None = param(None, "W&B tags.")
    group: str | None = param(None, "W&B group.")
    notes: str | None = param(None, "W&B notes.")
    mode: Literal["online", "offline", "disabled"] | None = param(
        None, "W&B mode; offline when no WANDB_API_KEY is set."
    )


class TrackingSection(Section):
    """Logging, experiment tracking and profiling."""

    logging_strategy: Literal["epoch", "steps"] = param(
        "epoch",
        "The logging strategy to adopt during training. If set to steps, logging_steps decides the frequency.",
        group=TRAIN,
    )
    logging_steps: int = param(
        500, "Number of update steps between two logs if logging_strategy='steps'.", group=TRAIN, ge=1
    )
    tracking_uri: str | None = param(
        None, "MLflow tracking URI; default: a SQLite store in the output folder."
    )
    experiment_name: str | None = param(None, "MLflow experiment name; default: the spec's name.")
    use_wandb: Flag = param(False, "Log to Weights & Biases.")
    wandb_config: WandbSection = Field(default_factory=WandbSection, description="W&B settings.")
    save_metrics: Flag = param(False, "Write per-step training metrics to a JSON file in the output folder.")
    flop_counter: Flag = param(False, "Count FLOPs of one training step; cannot be used with use_profiler.")
    flop_counter_start: int = param(3, "The step at which FLOPs are counted (after warm-up).", ge=0)
    use_profiler: Flag = param(False, "Profile training steps with the PyTorch profiler; cannot be used with flop_counter.")
    profiler_dir: str | None = param(None, "Folder of profiler traces (default: output folder).")


class ResourcesSection(Section):
    """Compute: nodes, processes and devices."""

    nodes: int = param(
        1, "Number of nodes.", name="nodes", aliases=("num_nodes", "num_nodes_finetune", "instance_count"), ge=1
    )
    processes_per_node: int = param(
        1,
        "Training processes per node, usually one per GPU.",
        name="processes_per_node",
        aliases=("nproc_per_node", "number_of_gpu_to_use_finetuning", "process_count_per_instance"),
        ge=1,
    )
    num_devices: int | None = param(
        None, "Total devices (Anyscale). When given, must equal nodes x processes_per_node.", ge=1
    )
    device: Literal["auto", "cpu", "gpu"] = param(
        "auto",
        "Where the processes train. auto: on a cluster target (slurm, ray, azureml) one GPU per process, "
        "requested and required; on the local target GPUs when present, decided at run time. cpu: no GPU is "
        "requested or used. gpu: one GPU per process, required.",
    )
    accelerator_type: str | None = param(
        None,
        "GPU type the job needs, e.g. A10G, A100-80G, H100. Each cluster target maps it to its own form (slurm: the "
        "GPU type of --gpus-per-node=TYPE:N, or a --constraint node feature with targets.slurm.accelerator_request; "
        "ray: ScalingConfig accelerator_type and a KubeRay node affinity; azureml: the VM size).",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$",
    )
    one_gpu: Flag = param(False, "llama-recipes: run on a single GPU without distribution.")
    cpus_per_process: int | None = param(
        None, "CPU cores per training process. Default on a cluster target: 8 per process of a GPU job, else 1.", ge=1
    )
    memory: str | None = param(
        None,
        "Memory per node, e.g. 64G (binary units; a bare number is megabytes). Default on slurm and ray: 32G per "
        "GPU of a GPU job, plus 32G per GPU for each thing offloaded to CPU memory (DeepSpeed optimizer or "
        "parameters, FSDP cpu offload: both); a CPU job: the cluster's default (KubeRay: 8Gi).",
        pattern=r"^[0-9]+[KMGT]?$",
    )


class EnvSection(Section):
    """Environment of the training processes."""

    vars: dict[EnvName, EnvValue] = param(description="Environment variables set for training.", default_factory=dict)
    secrets: list[EnvName] = param(
        description="Names of environment variables holding secrets; passed by name, never by value.",
        default_factory=list,
    )


class LintSection(Section):
    """Lint settings of this spec."""

    ignore: dict[str, str] = param(
        description="Rules to silence, each a known rule id with the reason: {FTC102: 'why'}. FTC106 (a literal "
        "secret) cannot be silenced.",
        default_factory=dict,
    )
