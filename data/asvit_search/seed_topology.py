# As-ViT seed topology: REINFORCE, 500 steps, seed 0
# log: data/asvit_search/search.jsonl
# genotype: 8,8,4|4,1,3|4,2,6|4,1,4|32
# policy probability of each choice: tokenizer_kernel 8 (1.00), down_kernel_2 4 (0.99), down_kernel_3 4 (1.00), down_kernel_4 4 (0.99), heads 32 (0.94), split_1 8 (0.56), split_2 1 (0.82), split_3 2 (0.99), mlp_ratio_1 4 (0.95), mlp_ratio_2 3 (0.98), mlp_ratio_3 6 (0.98), mlp_ratio_4 4 (0.99)
arch = dict(width=32, depths=[1, 1, 1, 1], heads=32, mlp_ratios=[4, 3, 6, 4], tokenizer_kernel=8, down_kernels=[4, 4, 4], splits=[8, 1, 2, 1])
