/* twin-engine - the daemon (work in progress). */
#include <stdio.h>
int main(void) {
  fprintf(stderr, "twin-engine: not implemented yet\n");
  return 2;
}
