# Scaling search's winner for the cls study task (ViT D=64 L=4 H=2 r=2, 28 px, patch 7), at
# <= 1.05x its FLOPs, ranked by As-ViT's training-free proxies (rank 1 of 24 feasible):
#   python tools/scale_search.py --family vit --arch '{"embed_dims": 64, "num_layers": 4, "num_heads": 2, "mlp_ratio": 2.0}' --img-size 28 --patch-size 7 --in-channels 1 --cost flops --budget 0.00244 --scorer proxies --max-candidates 24
# -> D=96 L=6 H=2 r=2, 28 px, patch 14 (2 x 2 tokens), 0.0023 GFLOPs (baseline 0.0023).
scaling = dict(depth_mult=1.5, width_mult=1.5, resolution_mult=0.75, patch_size_mult=2.0)
