"""Reference (diffusers / transformers) twins of our parts, for parity tests and benchmarks.

Imports torch, diffusers and transformers: test and bench only, never the library.
"""

from __future__ import annotations


def diffusers_parts(config, seed: int = 0, randomize: bool = False):
    """A diffusers UNet and VAE and a transformers CLIP text model shaped like ``config``.

    Args:
        config: our ModelConfig.
        seed: torch seed of the initialization.
        randomize: also draw every norm scale/shift and bias at random (the default init
            sets them to 1/0, which would hide a swapped or missing norm in a parity test).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    levels = len(config.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=config.image_size // config.vae_downsample,
        in_channels=config.unet_in_channels,
        out_channels=config.latent_channels,
        block_out_channels=config.unet_channels,
        layers_per_block=config.unet_layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_attention)],
        cross_attention_dim=config.context_dim,
        attention_head_dim=config.unet_heads,
        norm_num_groups=config.norm_groups,
    ).eval()
    vae = AutoencoderKL(
        block_out_channels=config.vae_channels,
        down_block_types=["DownEncoderBlock2D"] * len(config.vae_channels),
        up_block_types=["UpDecoderBlock2D"] * len(config.vae_channels),
        layers_per_block=config.vae_layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.vae_norm_groups,
    ).eval()
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.text_width,
            intermediate_size=config.text_intermediate,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.text_heads,
            max_position_embeddings=config.max_length,
            hidden_act="quick_gelu",
        )
    ).eval()
    assert levels == len(unet.config.block_out_channels)
    if randomize:
        with torch.no_grad():
            for module in (unet, vae, text):
                for name, param in module.named_parameters():
                    if param.dim() == 1:
                        param.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(param))
    return unet, vae, text


def copy_into_ours(model, unet, vae, text) -> None:
    """Assign the reference parts' weights to our ``StableDiffusion`` by variable path."""
    from kerasemote.convert.naming import to_keras, torch_key

    states = {
        "unet": unet.state_dict(),
        "vae_encoder": vae.state_dict(),
        "vae_decoder": vae.state_dict(),
        "text_encoder": {"text_model." + k.removeprefix("text_model."): v for k, v in text.state_dict().items()},
    }
    for part, keras_model in model.parts.items():
        state = states[part]
        for var in keras_model.weights:
            key = torch_key(var.path)
            if key is not None and key in state:
                var.assign(to_keras(var.path, state[key].float().numpy(), tuple(var.shape)))
