/* twin-sim - fleet simulator.
 * Not implemented yet (in progress): prints usage and exits non-zero so no
 * script mistakes it for a working tool. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    printf("usage: twin-sim get ID | list [filters] | timeline ID | export ...\n"
           "twin-sim is not implemented yet; read twins from MongoDB (collection twin.twins).\n");
    return 0;
  }
  fprintf(stderr, "twin-sim: not implemented yet (planned: get, list, timeline, export)\n");
  return 2;
}
