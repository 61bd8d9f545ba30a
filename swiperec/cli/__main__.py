import sys

from swiperec.cli import main

sys.exit(main())
