"""Auto-checked exercises, one module per lesson, named after the lesson's slug.

`maaslab.exercises.gradient_descent` grades lesson 01, `maaslab.exercises.mini_gpt` lesson 08,
and so on; every check returns a `CheckResult` built by `maaslab.exercises.grading`, which also
holds the one "right answer, or the first known mistake" helper every lesson uses. Import a
lesson's module directly (`from maaslab.exercises.attention import check_causal_mask`): this
package imports nothing at import time, so grading lesson 01 does not load torch.

Exercises sit above the library they grade: a module here may import any maaslab core module,
but no core module imports from here.
"""
