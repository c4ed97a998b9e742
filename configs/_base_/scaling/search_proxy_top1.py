# The scaling search's winner for the cls study task (configs/cls/scaled_vit-p7_fmnist.py:
# ViT D=64 L=4 H=2 r=2, 28 px, patch 7, average-pooled, no class token) within 1.05x its
# FLOPs, ranked by As-ViT's training-free proxies (rank 1 of the 24 costliest feasible):
#   python tools/scale_search.py --family vit --arch '{"embed_dims": 64, "num_layers": 4, "num_heads": 2, "mlp_ratio": 2.0}' --img-size 28 --patch-size 7 --in-channels 1 --backbone-kwargs '{"with_cls_token": false, "out_type": "avg_featmap"}' --cost flops --budget 0.00244 --scorer proxies --max-candidates 24
# -> D=96 L=3 H=2 r=2, 42 px, patch 14 (3 x 3 tokens), 2.22 MMACs (baseline 2.32).
scaling = dict(depth_mult=0.75, width_mult=1.5, resolution_mult=1.5, patch_size_mult=2.0)
