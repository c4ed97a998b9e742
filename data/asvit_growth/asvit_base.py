# As-ViT base: growth step 10, params 4.74552e+07 (budget 1.1e+08), seed 0
# genotype: 8,8,4,9|4,1,3,3|4,2,6,1|4,1,4,1|32,180
# log: data/asvit_growth/growth.jsonl
arch = dict(width=180, depths=[9, 3, 1, 1], heads=[4, 8, 16, 32], mlp_ratios=[4.0, 3.0, 6.0, 4.0], tokenizer_kernel=8, down_kernels=[4, 4, 4], splits=[8, 1, 2, 1])
img_size = 224
