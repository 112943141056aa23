"""Text to image: the prompt alone, `StableDiffusion3Pipeline`'s own call. No options."""

from core.modes.base import Mode

TXT2IMG = Mode(
    id="txt2img",
    label="Text to image",
    remote_task="text_to_image",  # huggingface_hub InferenceClient.text_to_image
)
