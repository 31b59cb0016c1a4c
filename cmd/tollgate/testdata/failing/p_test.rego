package p_test

import data.p

test_passes if p.x == 1

test_fails if p.x == 2
