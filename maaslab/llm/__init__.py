"""Lesson 15: serving a language model — a paged KV cache, continuous batching, prefix caching.

The engine runs any local Llama- or GPT-2-family folder with its own forward pass over a paged
KV cache (fixed-size blocks, a block table per sequence), and a scheduler that lets requests
join and leave the running batch at every step.
"""
