"""LoRA fine-tuning of the VLM from the corrections dataset (shipped as `napari_fracto.training`)."""
