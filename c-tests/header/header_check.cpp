// The header check, compiled as C++11 (see header_check.c).
#include "header_check.c"
