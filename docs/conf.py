"""Sphinx configuration: the Markdown pages of docs/ through MyST (``make docs``).

Nothing here imports mmvitscale: the pages are plain Markdown, so the build needs only the
packages in requirements/docs.txt.
"""
project = 'mmvitscale'
author = 'mmvitscale contributors'
copyright = '2026, mmvitscale contributors'

extensions = ['myst_parser', 'sphinxcontrib.mermaid']
source_suffix = {'.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']

# ```mermaid fences render on GitHub and, as the mermaid directive, in Sphinx.
myst_fence_as_directive = ['mermaid']
# `[text](page.md#a-heading)` links resolve to headings down to level 3.
myst_heading_anchors = 3

html_theme = 'alabaster'
html_title = 'mmvitscale'
