"""Stage IV: the global taxonomy - the BIP over AHP affinities, policy evaluation (gain / quality), graphs.

    taskonomy --config configs/tiny.yaml solve --budget 3 --max-order 2
    taskonomy --config configs/tiny.yaml evaluate
    taskonomy --config configs/tiny.yaml all-for-one NAME --supervised normal,reshading
"""
