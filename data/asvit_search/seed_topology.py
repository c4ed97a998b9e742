# As-ViT seed topology: REINFORCE, 186 steps, seed 0
# log: data/asvit_search/search.jsonl
arch = dict(width=32, depths=[1, 1, 1, 1], heads=16, mlp_ratios=[4, 3, 6, 3], tokenizer_kernel=8, down_kernels=[4, 4, 4], splits=[8, 2, 2, 1])
