"""The diffusion side: pure tensor math and the models it runs.

- :mod:`.engine`: deterministic DDIM inversion and key-conditioned masked denoising;
- :mod:`.mixing`: the keyed orthogonal involution applied to the noise inside a mask;
- :mod:`.models`: backbones (diffusers models), presets, loading, weight identity;
- :mod:`.accelerate`: opt-in GPU fast paths for a backbone's network call.

Nothing here knows of files, faces or where keys come from.
"""
