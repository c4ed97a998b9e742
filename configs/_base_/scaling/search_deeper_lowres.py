# The scaling search's best candidate for the cls study task that keeps its 7-px patches
# (rank 7 of the 24 costliest feasible by As-ViT's training-free proxies; same command as
# search_proxy_top1.py):
#   python tools/scale_search.py --family vit --arch '{"embed_dims": 64, "num_layers": 4, "num_heads": 2, "mlp_ratio": 2.0}' --img-size 28 --patch-size 7 --in-channels 1 --backbone-kwargs '{"with_cls_token": false, "out_type": "avg_featmap"}' --cost flops --budget 0.00244 --scorer proxies --max-candidates 24
# -> D=80 L=6 H=2 r=1, 21 px, patch 7 (3 x 3 tokens), 2.22 MMACs (baseline 2.32).
scaling = dict(depth_mult=1.5, width_mult=1.25, mlp_ratio_mult=0.5, resolution_mult=0.75)
