# Scaling search's best candidate that keeps the cls study task's patch size (rank 7 of 24
# feasible by As-ViT's training-free proxies, same command as search_proxy_top1.py):
#   python tools/scale_search.py --family vit --arch '{"embed_dims": 64, "num_layers": 4, "num_heads": 2, "mlp_ratio": 2.0}' --img-size 28 --patch-size 7 --in-channels 1 --cost flops --budget 0.00244 --scorer proxies --max-candidates 24
# -> D=96 L=3 H=2 r=2, 21 px, patch 7 (3 x 3 tokens), 0.0023 GFLOPs (baseline 0.0023).
scaling = dict(depth_mult=0.75, width_mult=1.5, resolution_mult=0.75)
