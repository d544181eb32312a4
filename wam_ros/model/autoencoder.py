"""Spatio-temporal autoencoder: RGB clips -> latent frames (8x spatial downsampling, causal in time).

Causal in time (each latent frame sees its own and earlier frames only, the clip's first frame
repeated as left padding) so that the conditioning frame alone encodes to the same latent as at
the start of a clip: inference encodes one frame, training encodes clips. No temporal
compression: one latent frame per (subsampled) video frame, which keeps the 4-actions-per-frame
bookkeeping exact. Latents are bounded by tanh to the scale of the flow's Gaussian noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalConv3d(nn.Module):
    def __init__(self, inputs: int, outputs: int, spatial_stride: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(inputs, outputs, kernel_size=3, stride=(1, spatial_stride, spatial_stride),
                              padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:  # x: (N, C, T, H, W)
        first = x[:, :, :1].expand(-1, -1, 2, -1, -1)
        return self.conv(torch.cat([first, x], dim=2))


class VideoAutoencoder(nn.Module):
    def __init__(self, latent_channels: int, width: int):
        super().__init__()
        widths = (width, 2 * width, 2 * width)
        self.encoder = nn.Sequential(
            CausalConv3d(3, widths[0]), nn.SiLU(),
            CausalConv3d(widths[0], widths[1], 2), nn.SiLU(),
            CausalConv3d(widths[1], widths[2], 2), nn.SiLU(),
            CausalConv3d(widths[2], widths[2], 2), nn.SiLU(),
            CausalConv3d(widths[2], latent_channels),
        )
        self.decoder_in = CausalConv3d(latent_channels, widths[2])
        self.decoder_up = nn.ModuleList([CausalConv3d(widths[2], widths[2]), CausalConv3d(widths[2], widths[1]),
                                         CausalConv3d(widths[1], widths[0])])
        self.decoder_out = CausalConv3d(widths[0], 3)

    def encode(self, rgb: Tensor) -> Tensor:
        """rgb: (B, V, T, 3, H, W) in [-1, 1] -> latents (B, V, T, C, H/8, W/8) in (-1, 1)."""
        b, v = rgb.shape[:2]
        x = rgb.flatten(0, 1).transpose(1, 2)
        z = torch.tanh(self.encoder(x))
        return z.transpose(1, 2).unflatten(0, (b, v))

    def decode(self, latents: Tensor) -> Tensor:
        """latents (B, V, T, C, h, w) -> rgb (B, V, T, 3, 8h, 8w) in [-1, 1]."""
        b, v = latents.shape[:2]
        x = F.silu(self.decoder_in(latents.flatten(0, 1).transpose(1, 2)))
        for conv in self.decoder_up:
            x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
            x = F.silu(conv(x))
        rgb = torch.tanh(self.decoder_out(x))
        return rgb.transpose(1, 2).unflatten(0, (b, v))
