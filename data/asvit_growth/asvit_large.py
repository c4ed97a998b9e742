# As-ViT large: growth step 13, params 9.29329e+07 (budget 1.1e+08), seed 0
# genotype: 8,8,4,10|4,1,3,5|4,2,6,1|4,1,4,1|32,312
# log: data/asvit_growth/growth.jsonl
arch = dict(width=312, depths=[10, 5, 1, 1], heads=[4, 8, 16, 32], mlp_ratios=[4.0, 3.0, 6.0, 4.0], tokenizer_kernel=8, down_kernels=[4, 4, 4], splits=[8, 1, 2, 1])
img_size = 224
