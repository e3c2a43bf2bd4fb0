"""The pipeline's work: importable, side-effect free, one concern a module.

Each component is a function (or small class) over explicit inputs and output paths; the CLIs in
`pipeline/` are thin shells over them.
"""
