#ifndef SIGMA_CLIBPQ_SHIM_H
#define SIGMA_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
