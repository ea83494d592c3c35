#ifndef SIGMA_CZEROMQ_SHIM_H
#define SIGMA_CZEROMQ_SHIM_H
#include <zmq.h>
#include <sys/eventfd.h>
#endif
