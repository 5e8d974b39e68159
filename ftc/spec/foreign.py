"""Other tools' names that ftc does not accept as they are, and where each belongs in a spec.

Used for hints only: a value under one of these names may mean something else in ftc (Axolotl's
`sample_packing: true` is `batching_strategy: packing`), so the error says where it goes and how.
"""

from __future__ import annotations

# Task names of Azure ML (seeds 000-002), the Hugging Face pipelines and Anyscale -> ftc's task.
FOREIGN_TASKS = {
    "text_generation": "causal_lm",
    "text-generation": "causal_lm",
    "chat_completion": "causal_lm",
    "chat-completion": "causal_lm",
    "causal-lm": "causal_lm",
    "text-classification": "text_classification",
    "sequence_classification": "text_classification",
    "question-answering": "question_answering",
    "extractive_qa": "question_answering",
}

# Axolotl and LLMForge names -> (ftc's dotted key, how the value changes; empty when it does not).
FOREIGN_NAMES: dict[str, tuple[str, str]] = {
    "base_model": ("model.model_selector_output", ""),
    "base_model_config": ("model.model_selector_output", ""),
    "tokenizer_config": ("model.tokenizer_name", ""),
    "datasets": ("data.train_file_path", "give the data file; ftc reads one training file"),
    "val_set_size": ("data.validation_split_ratio", "a fraction; 0 means no validation split"),
    "sequence_len": ("data.max_seq_length", ""),
    "sample_packing": ("data.batching_strategy", "true is packing, false padding"),
    "pad_to_sequence_len": ("data.pad_to_max_length", ""),
    "padding": ("data.pad_to_max_length", "longest is false, max_length true"),
    "adapter": ("lora.apply_lora", "lora or qlora is true; qlora also needs precision.quantization: 4bit"),
    "lora_target_modules": ("lora.target_modules", ""),
    "lora_model_dir": ("lora.from_peft_checkpoint", ""),
    "micro_batch_size": ("training.per_device_train_batch_size", ""),
    "eval_batch_size": ("training.per_device_eval_batch_size", ""),
    "optimizer": ("optimizer.optim", "a section in ftc: give optimizer: {optim: NAME}"),
    "lr_scheduler": ("optimizer.lr_scheduler_type", ""),
    "bf16": ("precision.precision", "true or auto is bf16"),
    "fp16": ("precision.precision", "true is fp16"),
    "load_in_4bit": ("precision.quantization", "true is 4bit"),
    "load_in_8bit": ("precision.quantization", "true is 8bit"),
    "flash_attention": ("precision.use_fast_kernels", ""),
    "wandb_project": ("tracking.wandb_config.project", "and tracking.use_wandb: true"),
    "wandb_entity": ("tracking.wandb_config.entity", "and tracking.use_wandb: true"),
    "task_type": ("task", "ftc sets the PEFT task type from the spec's task"),
    "trainer_resources": ("targets.ray.trainer_resources", ""),
    "worker_resources": ("targets.ray.worker_resources", ""),
}

# Keys that hold a credential in other tools' configs -> the environment variable to list in env.secrets.
SECRET_KEYS = {
    "api_key": "WANDB_API_KEY",
    "wandb_api_key": "WANDB_API_KEY",
    "hf_token": "HF_TOKEN",
    "hub_token": "HF_TOKEN",
    "hf_hub_token": "HF_TOKEN",
    "huggingface_token": "HF_TOKEN",
    "token": "HF_TOKEN",
    "mlflow_tracking_token": "MLFLOW_TRACKING_TOKEN",
    "tracking_token": "MLFLOW_TRACKING_TOKEN",
    "mlflow_tracking_password": "MLFLOW_TRACKING_PASSWORD",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
}


def task_hint(value: object) -> str:
    """"did you mean" for another tool's task name (any case), or ""."""
    task = FOREIGN_TASKS.get(str(value).strip().lower())
    return f"did you mean {task}? ({value} is another tool's name for it)" if task else ""


def secret_env(key: str) -> str | None:
    """The environment variable a credential-bearing key of another tool stands for, or None."""
    return SECRET_KEYS.get(key.lower())


__all__ = ["FOREIGN_NAMES", "FOREIGN_TASKS", "SECRET_KEYS", "secret_env", "task_hint"]
