import sys

from samu_st.cli import main

sys.exit(main())
