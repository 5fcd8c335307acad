"""Entry point of the fresh process that measures one model's training-step memory (see ``train_cost``)."""

import sys

from yolo_attn.bench.train_cost import child_main

if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
